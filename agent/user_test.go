package agent

import (
	"context"
	"strings"
	"testing"

	"github.com/livefix/livefix/internal/patchtest"
	"github.com/livefix/livefix/patchrepo"
	"github.com/livefix/livefix/ulp"
)

const libID = "0123456789abcdef0123456789abcdef01234567"

// fakeUser is a set of processes mapping libID, each at a patch level.
type fakeUser struct {
	procs map[int]int
	log   []string
}

func (u *fakeUser) Levels(id string) (map[int]int, error) {
	out := map[int]int{}
	if id == libID {
		for p, l := range u.procs {
			out[p] = l
		}
	}
	return out, nil
}

func (u *fakeUser) Apply(_ context.Context, path string) (int, []string, error) {
	p, err := ulp.ReadFile(path) // the verified download must decode
	if err != nil {
		return 0, nil, err
	}
	n := 0
	for pid, l := range u.procs {
		if l < p.Level {
			u.procs[pid] = p.Level
			n++
		}
	}
	u.log = append(u.log, "apply "+p.Name)
	return n, nil, nil
}

func (u *fakeUser) Remove(_ context.Context, id string) (int, []string, error) {
	for pid := range u.procs {
		u.procs[pid] = 0
	}
	u.log = append(u.log, "remove")
	return len(u.procs), nil, nil
}

func (e *env) publishUser(t *testing.T, name string, level int, channel string) {
	t.Helper()
	p, err := patchtest.UserPatch(t.TempDir(), name, level, libID)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.repo.Publish(p, patchrepo.PublishOptions{Channel: channel}); err != nil {
		t.Fatal(err)
	}
}

func TestUserspaceUpdates(t *testing.T) {
	e := newEnv(t, "")
	u := &fakeUser{procs: map[int]int{100: 0, 200: 0}}
	e.agent.User = u
	e.publishUser(t, "libfix_l1", 1, "stable")
	e.publishUser(t, "libfix_l2", 2, "test")
	rep, err := e.update(true)
	if err != nil || len(rep.User) != 1 || rep.User[0].Processes != 2 || len(u.log) != 0 {
		t.Fatalf("dry run: %+v %v %v", rep.User, err, u.log)
	}
	if rep, err = e.update(false); err != nil || len(rep.User) != 1 || rep.User[0].Applied != 2 || u.procs[100] != 1 {
		t.Fatalf("update: %+v %v %v", rep.User, err, u.procs)
	}
	if rep, err = e.update(false); err != nil || len(rep.User) != 0 {
		t.Fatalf("second update: %+v %v", rep.User, err)
	}
	if _, err := e.repo.Revoke(libID, 1, "crashes"); err != nil {
		t.Fatal(err)
	}
	rep, err = e.update(false)
	if err != nil || len(rep.User) != 1 || rep.User[0].Action != ActionUnload || !strings.Contains(rep.User[0].Reason, "crashes") || u.procs[100] != 0 {
		t.Fatalf("after revoke: %+v %v %v", rep.User, err, u.procs)
	}
	if got := strings.Join(u.log, ","); got != "apply libfix_l1,remove" {
		t.Fatalf("log %s", got)
	}
	// A test host takes level 2 (test) over nothing; revoking a level
	// nobody runs changes nothing.
	e.agent.Config.Channel = "test"
	if rep, err = e.update(false); err != nil || u.procs[200] != 2 {
		t.Fatalf("test channel: %+v %v %v", rep.User, err, u.procs)
	}
}
