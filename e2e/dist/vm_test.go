package dist_test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/livefix/livefix/internal/e2etest"
	"github.com/livefix/livefix/internal/kerneltest"
	"github.com/livefix/livefix/internal/kernelvm"
)

// guestScript runs the acceptance inside the guest: server files
// and agent both there, the repository served from loopback.
const guestScript = e2etest.GuestShell + `
set -u
n=0
waitfor() { # waitfor SECONDS WORD [absent]: /proc/version gains (or loses) WORD
	i=0
	while [ $i -lt $(($1 * 10)) ]; do
		v=$(cat /proc/version)
		if [ "${3:-}" = absent ]; then hasnt "$v" "$2" && return 0; else has "$v" "$2" && return 0; fi
		sleep 0.1; i=$((i + 1))
	done
	return 1
}
waitver() { # waitver SECONDS VERSION: livefix kernel version reaches VERSION (the daemon applies asynchronously)
	i=0
	while [ $i -lt $(($1 * 10)) ]; do
		v=$(livefix kernel version 2>/dev/null)
		[ "$v" = "$2" ] && return 0
		sleep 0.1; i=$((i + 1))
	done
	echo "livefix kernel version: $v, want $2"
	return 1
}
export LIVEFIX_SERVER_DATA=/tmp/srv LIVEFIX_AGENT_CONFIG=/tmp/etc/agent.toml LIVEFIX_STATE_DIR=/tmp/state
P=/root/p
livefix-server keys init
livefix-server static --listen 127.0.0.1:8471 > /tmp/static.log 2>&1 &
sleep 1
livefix-server publish $P/lf_dist_l1.ko --channel stable; t publish-l1 [ $? = 0 ]
BID=$(sed -n 's/.*"vmlinux_build_id": "\([0-9a-f]*\)".*/\1/p' $P/lf_dist_l1.json)
livefix register --server http://127.0.0.1:8471 --root /tmp/srv/repository/metadata/1.root.json --state-dir /tmp/state; t register [ $? = 0 ]
t config-mode [ "$(stat -c %a /tmp/etc/agent.toml)" = 600 ]
t before hasnt "$(cat /proc/version)" livefix.dist1
livefix update; t update-l1 [ $? = 0 ]
t l1-applied has "$(cat /proc/version)" livefix.dist1
t l1-version [ "$(livefix kernel version)" = "$(uname -r)+livefix1" ]
livefix-server publish $P/lf_dist_l2.ko --channel test; t publish-l2-test [ $? = 0 ]
livefix update; t update-stable-ignores-test [ $? = 0 ]
t l2-not-taken hasnt "$(cat /proc/version)" livefix.dist2
livefix-server publish $P/lf_dist_l1.ko --channel stable 2>/tmp/refuse.log; t republish-refused [ $? != 0 ]
t republish-says grep -q "not higher" /tmp/refuse.log
livefix daemon --poll 1s > /tmp/daemon.log 2>&1 &
D=$!
sleep 3
t daemon-keeps-l1 hasnt "$(cat /proc/version)" livefix.dist2
livefix-server promote $BID 2 --channel stable; t promote [ $? = 0 ]
t daemon-takes-l2 waitfor 30 livefix.dist2
t l2-version waitver 30 "$(uname -r)+livefix2"
livefix-server revoke $BID 2 --reason "regression found in testing"; t revoke [ $? = 0 ]
t daemon-returns-to-l1 waitfor 30 livefix.dist2 absent
t l1-again has "$(cat /proc/version)" livefix.dist1
t l1-version-again waitver 30 "$(uname -r)+livefix1"
sleep 2
livefix status --json > /tmp/status.json; cat /tmp/status.json
t status-agent grep -q '"available_level": 1' /tmp/status.json
t status-cves grep -q 'CVE-2024-0001' /tmp/status.json
livefix info
kill $D; wait $D
cat /tmp/daemon.log
livefix-server list
`

var checks = []string{
	"publish-l1", "register", "config-mode", "before", "update-l1", "l1-applied", "l1-version",
	"publish-l2-test", "update-stable-ignores-test", "l2-not-taken", "republish-refused", "republish-says",
	"daemon-keeps-l1", "promote", "daemon-takes-l2", "l2-version", "revoke", "daemon-returns-to-l1",
	"l1-again", "l1-version-again", "status-agent", "status-cves",
}

// TestDistributionInVM is issue 8's acceptance 1: publish level 1 to
// stable and update applies it; level 2 on test is not taken by a stable
// host; promoted, the daemon takes it on a following poll; revoked, the
// host returns to level 1. The patches are real live patches of
// /proc/version built by livefix-build kernel.
func TestDistributionInVM(t *testing.T) {
	tgt := kerneltest.RequireVM(t)
	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Minute)
	defer cancel()
	tmp := t.TempDir()
	bin := e2etest.Build(t, "livefix", "livefix-server", "livefix-build")
	// LIVEFIX_DIST_PATCH_DIR keeps the built patches between runs (the
	// kernel tree is shared and busy); by default they are built afresh.
	out := filepath.Join(tmp, "p")
	if d := os.Getenv("LIVEFIX_DIST_PATCH_DIR"); d != "" {
		out = d
	}
	for i, lv := range []struct{ name, level, cve string }{{"lf_dist_l1", "1", "CVE-2024-0001"}, {"lf_dist_l2", "2", "CVE-2024-0002"}} {
		if _, err := os.Stat(filepath.Join(out, lv.name+".json")); err == nil && os.Getenv("LIVEFIX_DIST_PATCH_DIR") != "" {
			t.Logf("using %s from %s", lv.name, out)
			continue
		}
		cmd := exec.CommandContext(ctx, filepath.Join(bin, "livefix-build"), "kernel", "--name", lv.name, "--level", lv.level,
			"--patch", filepath.Join("testdata", []string{"level1.patch", "level2.patch"}[i]), "--cve", lv.cve, "-o", out)
		if b, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("livefix-build kernel %s: %v\n%s", lv.name, err, b)
		}
	}
	files := map[string]string{
		"/bin/livefix":        filepath.Join(bin, "livefix"),
		"/bin/livefix-agent":  filepath.Join(bin, "livefix-agent"), // livefix register/update/daemon run it
		"/bin/livefix-server": filepath.Join(bin, "livefix-server"),
	}
	for _, n := range []string{"lf_dist_l1", "lf_dist_l2"} {
		for _, ext := range []string{".ko", ".json"} {
			files["/root/p/"+n+ext] = filepath.Join(out, n+ext)
		}
	}
	res, err := kernelvm.Run(ctx, kernelvm.Config{Target: tgt, Script: guestScript, Files: files, Timeout: 8 * time.Minute, Log: e2etest.GuestLog(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("guest output:\n%s", res.Output)
	e2etest.CheckGuest(t, res.Output, checks)
	t.Logf("guest ran in %s", res.Duration.Round(time.Second))
}
