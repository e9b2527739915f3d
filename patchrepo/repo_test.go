package patchrepo

import (
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/livefix/livefix/internal/patchtest"
	"github.com/theupdateframework/go-tuf/v2/metadata"
	"github.com/theupdateframework/go-tuf/v2/metadata/config"
	"github.com/theupdateframework/go-tuf/v2/metadata/updater"
)

const bid = "f75010e906ea0123456789abcdef0123456789ab"

func newRepo(t *testing.T) *Repo {
	t.Helper()
	r, err := Init(t.TempDir(), InitOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func kpatch(t *testing.T, k patchtest.KernelPatch) string {
	t.Helper()
	if k.Name == "" {
		k.Name = "lf_test"
	}
	if k.BuildID == "" {
		k.BuildID = bid
	}
	ko, err := k.Write(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return ko
}

// verified lists the targets a TUF client sees over HTTP, starting from
// the first root version, as a host that registered before every
// rotation does.
func verified(t *testing.T, r *Repo) map[string]*metadata.TargetFiles {
	t.Helper()
	srv := httptest.NewServer(http.FileServer(http.Dir(RepositoryDir(r.Dir))))
	defer srv.Close()
	root, err := os.ReadFile(filepath.Join(r.metaDir(), "1.root.json"))
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := config.New(srv.URL+"/metadata", root)
	if err != nil {
		t.Fatal(err)
	}
	cfg.RemoteTargetsURL = srv.URL + "/targets"
	cfg.LocalMetadataDir = t.TempDir()
	cfg.LocalTargetsDir = t.TempDir()
	up, err := updater.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := up.Refresh(); err != nil {
		t.Fatalf("client refresh: %v", err)
	}
	tgts := up.GetTopLevelTargets()
	for name, tf := range tgts {
		if _, _, err := up.DownloadTarget(tf, filepath.Join(t.TempDir(), "f"), ""); err != nil {
			t.Fatalf("download %s: %v", name, err)
		}
	}
	return tgts
}

func TestPublishPromoteRevoke(t *testing.T) {
	r := newRepo(t)
	e, err := r.Publish(kpatch(t, patchtest.KernelPatch{Level: 1, CVEs: []string{"CVE-2024-1086"}, Summary: "fix nft"}), PublishOptions{Channel: ChannelStable})
	if err != nil {
		t.Fatal(err)
	}
	if e.Level != 1 || e.BuildID != bid || e.Channel != ChannelStable || e.StableSince == nil || len(e.Targets) != 2 {
		t.Fatalf("entry %+v", e)
	}
	if len(e.CVEs) != 1 || e.Summary != "fix nft" {
		t.Fatalf("descriptive fields %+v", e)
	}
	if _, err := r.Publish(kpatch(t, patchtest.KernelPatch{Level: 2}), PublishOptions{Channel: ChannelTest, CVEs: []string{"CVE-2024-0001"}, MinAgent: "0.2.0"}); err != nil {
		t.Fatal(err)
	}
	lfp, err := patchtest.UserPatch(t.TempDir(), "libfix", 1, "0123456789abcdef0123456789abcdef01234567")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.Publish(lfp, PublishOptions{Channel: ChannelTest}); err != nil {
		t.Fatal(err)
	}
	tg := verified(t, r)
	want := []string{
		"kernel/" + bid + "/1/lf_test.ko", "kernel/" + bid + "/1/lf_test.json",
		"kernel/" + bid + "/2/lf_test.ko", "kernel/" + bid + "/2/lf_test.json",
		"user/0123456789abcdef0123456789abcdef01234567/1/libfix.lfp",
	}
	for _, w := range want {
		if tg[w] == nil {
			t.Errorf("target %s missing; have %v", w, keys(tg))
		}
	}
	c, err := DecodeCustom(*tg["kernel/"+bid+"/2/lf_test.ko"].Custom)
	if err != nil {
		t.Fatal(err)
	}
	if c.Channel != ChannelTest || c.MinAgent != "0.2.0" || c.StableSince != nil {
		t.Fatalf("custom %+v", c)
	}

	if _, err := r.Promote(bid, 2, ChannelStable); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Revoke(bid, 2, "breaks nftables"); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Promote(bid, 2, ChannelStable); !errors.Is(err, ErrRevoked) {
		t.Fatalf("promote of revoked: %v", err)
	}
	if _, err := r.Revoke(bid, 7, "x"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("revoke of unknown: %v", err)
	}
	tg = verified(t, r)
	c, err = DecodeCustom(*tg["kernel/"+bid+"/2/lf_test.json"].Custom)
	if err != nil {
		t.Fatal(err)
	}
	if c.Channel != ChannelStable || c.Revoked == nil || c.Revoked.Reason != "breaks nftables" {
		t.Fatalf("after promote+revoke: %+v", c)
	}
	list, err := r.List()
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 3 || list[0].Level != 1 || list[1].Revoked == nil || list[2].Kind != KindUser {
		t.Fatalf("list %+v", list)
	}
}

func keys(m map[string]*metadata.TargetFiles) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

func TestPublishRefusals(t *testing.T) {
	r := newRepo(t)
	if _, err := r.Publish(kpatch(t, patchtest.KernelPatch{Level: 2}), PublishOptions{Channel: ChannelTest}); err != nil {
		t.Fatal(err)
	}
	before := metaFiles(t, r)
	corrupt := func(t *testing.T) string {
		ko := kpatch(t, patchtest.KernelPatch{Level: 5})
		if err := os.WriteFile(ko, []byte("\x7fELF garbage"), 0o644); err != nil {
			t.Fatal(err)
		}
		return ko
	}
	truncated := func(t *testing.T) string {
		ko := kpatch(t, patchtest.KernelPatch{Level: 5})
		b, _ := os.ReadFile(ko)
		os.WriteFile(ko, b[:len(b)/2], 0o644)
		return ko
	}
	badJSON := func(t *testing.T) string {
		ko := kpatch(t, patchtest.KernelPatch{Level: 5})
		os.WriteFile(strings.TrimSuffix(ko, ".ko")+".json", []byte("{not json"), 0o644)
		return ko
	}
	noJSON := func(t *testing.T) string {
		ko := kpatch(t, patchtest.KernelPatch{Level: 5})
		os.Remove(strings.TrimSuffix(ko, ".ko") + ".json")
		return ko
	}
	badLFP := func(t *testing.T) string {
		p, err := patchtest.UserPatch(t.TempDir(), "libfix", 1, "00112233445566778899aabbccddeeff00112233")
		if err != nil {
			t.Fatal(err)
		}
		b, _ := os.ReadFile(p)
		b[len(b)-40] ^= 1
		os.WriteFile(p, b, 0o644)
		return p
	}
	tests := []struct {
		name string
		path func(t *testing.T) string
		opts PublishOptions
		want error
		msg  string
	}{
		{"same level", func(t *testing.T) string { return kpatch(t, patchtest.KernelPatch{Level: 2, Tag: "b"}) }, PublishOptions{Channel: ChannelStable}, ErrLevelNotHigher, "level 3 or higher"},
		{"lower level", func(t *testing.T) string { return kpatch(t, patchtest.KernelPatch{Level: 1}) }, PublishOptions{Channel: ChannelStable}, ErrLevelNotHigher, "already published"},
		{"json build-id differs", func(t *testing.T) string {
			return kpatch(t, patchtest.KernelPatch{Level: 3, JSONBuildID: "aa" + bid[2:]})
		}, PublishOptions{Channel: ChannelTest}, ErrBuildIDDiffers, "checks for " + bid},
		{"corrupt ko", corrupt, PublishOptions{Channel: ChannelTest}, ErrMalformed, ""},
		{"truncated ko", truncated, PublishOptions{Channel: ChannelTest}, ErrMalformed, ""},
		{"bad json", badJSON, PublishOptions{Channel: ChannelTest}, ErrMalformed, ""},
		{"no json", noJSON, PublishOptions{Channel: ChannelTest}, ErrMalformed, "needs its metadata"},
		{"corrupt lfp", badLFP, PublishOptions{Channel: ChannelTest}, ErrMalformed, "checksum"},
		{"other file", func(t *testing.T) string { return filepath.Join(t.TempDir(), "x.tar") }, PublishOptions{Channel: ChannelTest}, ErrMalformed, "want NAME.ko"},
		{"bad channel", func(t *testing.T) string { return kpatch(t, patchtest.KernelPatch{Level: 3}) }, PublishOptions{Channel: "beta"}, nil, "channel \"beta\""},
		{"bad cve", func(t *testing.T) string { return kpatch(t, patchtest.KernelPatch{Level: 3}) }, PublishOptions{Channel: ChannelTest, CVEs: []string{"cve-1"}}, nil, "not a CVE id"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := r.Publish(tt.path(t), tt.opts)
			if err == nil {
				t.Fatal("published; want a refusal")
			}
			if tt.want != nil && !errors.Is(err, tt.want) {
				t.Fatalf("error %v; want %v", err, tt.want)
			}
			if !strings.Contains(err.Error(), tt.msg) {
				t.Fatalf("error %q does not say %q", err, tt.msg)
			}
			if after := metaFiles(t, r); after != before {
				t.Fatalf("metadata changed by a refused publish:\n%s\n%s", before, after)
			}
		})
	}
}

func metaFiles(t *testing.T, r *Repo) string {
	ents, err := os.ReadDir(r.metaDir())
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	for _, e := range ents {
		fi, _ := e.Info()
		fmt.Fprintf(&b, "%s %d %s\n", e.Name(), fi.Size(), fi.ModTime())
	}
	return b.String()
}

// TestParallelPublish publishes levels for many build-ids from parallel
// goroutines, each with its own Repo (as separate processes would have):
// the lock serialises them and every one is in the final metadata.
func TestParallelPublish(t *testing.T) {
	r := newRepo(t)
	const n = 12
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := range n {
		ko := kpatch(t, patchtest.KernelPatch{Level: 1 + i%3, BuildID: fmt.Sprintf("%02x", i/3) + bid[2:]})
		wg.Add(1)
		go func() {
			defer wg.Done()
			rr, err := Open(r.Dir)
			if err == nil {
				_, err = rr.Publish(ko, PublishOptions{Channel: ChannelStable})
			}
			errs[i] = err
		}()
	}
	wg.Wait()
	refused := 0
	for _, err := range errs {
		if errors.Is(err, ErrLevelNotHigher) {
			refused++ // a lower level published after a higher one of its build-id
		} else if err != nil {
			t.Fatal(err)
		}
	}
	list, err := r.List()
	if err != nil {
		t.Fatal(err)
	}
	if len(list)+refused != n {
		t.Fatalf("%d listed + %d refused != %d published", len(list), refused, n)
	}
	if got := len(verified(t, r)); got != 2*len(list) {
		t.Fatalf("client sees %d targets; want %d", got, 2*len(list))
	}
	st, err := r.load()
	if err != nil {
		t.Fatal(err)
	}
	if int(st.targets.Signed.Version) != 1+len(list) {
		t.Fatalf("targets version %d after %d publishes", st.targets.Signed.Version, len(list))
	}
}

func TestRotateAndRefresh(t *testing.T) {
	dir := t.TempDir()
	offline := filepath.Join(t.TempDir(), "usb")
	r, err := Init(dir, InitOptions{RootKeysDir: offline, Keys: map[string]int{"root": 2}, Thresholds: map[string]int{"root": 2}})
	if err != nil {
		t.Fatal(err)
	}
	if ks, _ := readKeys(r.keyDir("root")); len(ks) != 0 {
		t.Fatalf("root keys left online: %d", len(ks))
	}
	if _, err := r.Publish(kpatch(t, patchtest.KernelPatch{Level: 1}), PublishOptions{Channel: ChannelStable}); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Rotate("targets", RotateOptions{}); err == nil || !strings.Contains(err.Error(), "root keys are needed") {
		t.Fatalf("rotate without root keys: %v", err)
	}
	for _, role := range []string{"targets", "snapshot", "timestamp", "root"} {
		res, err := r.Rotate(role, RotateOptions{RootKeysDir: offline})
		if err != nil {
			t.Fatalf("rotate %s: %v", role, err)
		}
		if len(res.NewKeys) == 0 || res.NewKeys[0] == res.OldKeys[0] {
			t.Fatalf("rotate %s: %+v", role, res)
		}
	}
	if got := len(verified(t, r)); got != 2 {
		t.Fatalf("after rotations the client sees %d targets", got)
	}
	r.Now = func() time.Time { return time.Now().Add(6 * 24 * time.Hour) }
	res, err := r.Refresh()
	if err != nil {
		t.Fatal(err)
	}
	if time.Until(res.Timestamp) < 12*24*time.Hour {
		t.Fatalf("timestamp expires %v", res.Timestamp)
	}
	r.Now = nil
	verified(t, r)
	if _, err := Init(dir, InitOptions{}); !errors.Is(err, ErrExists) {
		t.Fatalf("second init: %v", err)
	}
}

func TestThresholdMissingKey(t *testing.T) {
	r, err := Init(t.TempDir(), InitOptions{Keys: map[string]int{"targets": 2}, Thresholds: map[string]int{"targets": 2}})
	if err != nil {
		t.Fatal(err)
	}
	ks, _ := readKeys(r.keyDir("targets"))
	os.Remove(ks[0].path)
	_, err = r.Publish(kpatch(t, patchtest.KernelPatch{Level: 1}), PublishOptions{Channel: ChannelStable})
	if err == nil || !strings.Contains(err.Error(), "threshold is 2") {
		t.Fatalf("publish with 1 of 2 keys: %v", err)
	}
}
