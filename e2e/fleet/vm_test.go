package fleet

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/livefix/livefix/internal/e2etest"
	"github.com/livefix/livefix/internal/kerneltest"
	"github.com/livefix/livefix/internal/kernelvm"
)

// vmScript is issue 9's acceptance 2 inside one guest: livefix-server
// serve and the agent both there, talking over the guest's loopback.
// Level 1 is published and `livefix update` applies it; level 2 is
// published and its load is refused by the kernel (module loading is
// switched off with kernel.modules_disabled, as a hardened host has it),
// so the host keeps level 1 and reports the failure. After each step
// dashget logs in as an operator and prints a dashboard page, each line
// prefixed with the page's name, for the test to check.
const vmScript = e2etest.GuestShell + `
set -u
page() { # page NAME PATH: log in, fetch PATH, print it as NAME lines
	dashget $U op /tmp/pw "$2" > /tmp/page 2>/tmp/page.err; rc=$?
	t "$1-fetched" [ $rc = 0 ]
	cat /tmp/page.err
	sed "s/^/$1| /" /tmp/page
}
hostname fleet-vm1
export LIVEFIX_SERVER_DATA=/tmp/srv LIVEFIX_AGENT_CONFIG=/tmp/etc/agent.toml LIVEFIX_STATE_DIR=/tmp/state
P=/root/p
U=http://127.0.0.1:8470
livefix-server keys init > /dev/null; t keys-init [ $? = 0 ]
KEY=$(livefix-server org add acme | grep -o 'lfo_[A-Za-z0-9_-]*' | head -n 1)
t org-key [ -n "$KEY" ]
echo 'operator password for the vm' > /tmp/pw
livefix-server user add op --role viewer --password-file /tmp/pw; t user-add [ $? = 0 ]
livefix-server serve --listen 127.0.0.1:8470 --sync-interval 1s > /tmp/serve.log 2>&1 &
S=$!
i=0; while ! wget -q -O /dev/null $U/healthz 2>/dev/null && [ $i -lt 600 ]; do usleep 100000; i=$((i+1)); done
t serve-up wget -q -O /dev/null $U/healthz
livefix register --server $U --root /tmp/srv/repository/metadata/1.root.json --key "$KEY"; t register [ $? = 0 ]
HOST=$(sed -n 's/^host_id *= *"\(.*\)"/\1/p' /tmp/etc/agent.toml)
t host-id [ -n "$HOST" ]
echo "HOST-ID=$HOST"
t no-level-yet [ "$(livefix kernel version)" = "$(uname -r)" ]
livefix-server publish $P/lf_fleet_l1.ko --channel stable; t publish-l1 [ $? = 0 ]
sleep 3
livefix update; t update-l1 [ $? = 0 ]
t l1-applied has "$(cat /proc/version)" livefix.fleet1
page fleet1 /fleet
page host1 /hosts/$HOST

livefix-server publish $P/lf_fleet_l2.ko --channel stable; t publish-l2 [ $? = 0 ]
sleep 3
echo 1 > /proc/sys/kernel/modules_disabled
(timeout 300 livefix update 2>&1; echo $? > /tmp/rc) | tee /tmp/update2.log; rc=$(cat /tmp/rc)
t update-l2-fails [ $rc = 1 ]
t update-l2-says grep -q "level 1 kept" /tmp/update2.log
t l2-not-applied hasnt "$(cat /proc/version)" livefix.fleet2
t l1-kept has "$(cat /proc/version)" livefix.fleet1
t l1-version [ "$(livefix kernel version)" = "$(uname -r)+livefix1" ]
page fleet2 /fleet
page failed2 "/fleet?failed=1"
page host2 /hosts/$HOST
kill $S; wait $S
echo "serve exit $?"
cat /tmp/serve.log
`

var vmChecks = []string{
	"keys-init", "org-key", "user-add", "serve-up", "register", "host-id", "no-level-yet",
	"publish-l1", "update-l1", "l1-applied", "fleet1-fetched", "host1-fetched",
	"publish-l2", "update-l2-fails", "update-l2-says", "l2-not-applied", "l1-kept", "l1-version",
	"fleet2-fetched", "failed2-fetched", "host2-fetched",
}

// TestFleetInVM is issue 9's acceptance 2, in one boot of the packaged
// kernel: the dashboard, fetched over the guest's loopback by a logged-in
// operator, lists the host at the level `livefix update` applied, then
// with its last result failed when the next level's load is refused.
// The patches are real live patches of /proc/version built by
// livefix-build kernel (LIVEFIX_FLEET_PATCH_DIR=DIR keeps them between
// runs; by default they are built afresh).
func TestFleetInVM(t *testing.T) {
	tgt := kerneltest.RequireVM(t)
	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Minute)
	defer cancel()
	tmp := t.TempDir()
	bin := e2etest.Build(t, "livefix", "livefix-server", "livefix-build", "e2e/fleet/testdata/dashget")
	out := filepath.Join(tmp, "p")
	keep := os.Getenv("LIVEFIX_FLEET_PATCH_DIR")
	if keep != "" {
		out = keep
	}
	for _, lv := range []struct {
		name, level string
		cves        []string
	}{{"lf_fleet_l1", "1", []string{"CVE-2026-20001"}}, {"lf_fleet_l2", "2", []string{"CVE-2026-20001", "CVE-2026-20002"}}} {
		if _, err := os.Stat(filepath.Join(out, lv.name+".json")); err == nil && keep != "" {
			t.Logf("using %s from %s", lv.name, out)
			continue
		}
		args := []string{"kernel", "--name", lv.name, "--level", lv.level, "--patch", filepath.Join("testdata", "level"+lv.level+".patch"), "-o", out}
		for _, c := range lv.cves {
			args = append(args, "--cve", c)
		}
		start := time.Now()
		if b, err := exec.CommandContext(ctx, filepath.Join(bin, "livefix-build"), args...).CombinedOutput(); err != nil {
			t.Fatalf("livefix-build kernel %s: %v\n%s", lv.name, err, b)
		}
		t.Logf("%s built in %s", lv.name, time.Since(start).Round(time.Second))
	}
	files := map[string]string{
		"/bin/livefix":        filepath.Join(bin, "livefix"),
		"/bin/livefix-agent":  filepath.Join(bin, "livefix-agent"), // livefix register/update/daemon run it
		"/bin/livefix-server": filepath.Join(bin, "livefix-server"),
		"/bin/dashget":        filepath.Join(bin, "dashget"),
	}
	for _, n := range []string{"lf_fleet_l1", "lf_fleet_l2"} {
		for _, ext := range []string{".ko", ".json"} {
			files["/root/p/"+n+ext] = filepath.Join(out, n+ext)
		}
	}
	res, err := kernelvm.Run(ctx, kernelvm.Config{Target: tgt, Script: vmScript, Files: files, Timeout: 10 * time.Minute,
		Log: e2etest.GuestLog(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("guest output:\n%s", res.Output)
	e2etest.CheckGuest(t, res.Output, vmChecks)
	hostID := regexp.MustCompile(`(?m)^HOST-ID=(h\S+)`).FindStringSubmatch(res.Output)
	if hostID == nil {
		t.Fatal("the guest printed no host id")
	}
	release := tgt.Release

	// After level 1: the fleet lists the host at level 1, up to date, ok.
	row := hostRow(t, guestPage(res.Output, "fleet1"), "fleet-vm1")
	wantCells(t, "fleet page after level 1", row, "fleet-vm1", release, "1", "stable", "ok")
	if strings.Contains(row, "newest") {
		t.Errorf("fleet page after level 1: the host is shown behind: %s", row)
	}
	host1 := guestPage(res.Output, "host1")
	for _, want := range []string{"fleet-vm1", hostID[1], release} {
		if !strings.Contains(host1, want) {
			t.Errorf("host page after level 1 lacks %q", want)
		}
	}

	// After the refused level 2: still level 1, behind the newest (2),
	// last result failed; the failed filter lists it; the host page has
	// the error.
	row = hostRow(t, guestPage(res.Output, "fleet2"), "fleet-vm1")
	wantCells(t, "fleet page after the refused level 2", row, "fleet-vm1", release, "1 (newest 2)", "stable", "failed")
	hostRow(t, guestPage(res.Output, "failed2"), "fleet-vm1")
	// The host page: last result failed with the kernel's refusal, and a
	// history of two check-ins, the failed one first.
	host2 := guestPage(res.Output, "host2")
	if !regexp.MustCompile(`class="result failed">failed at [^<]*apply level 2: [^<]*finit_module: operation not permitted`).MatchString(host2) {
		t.Errorf("host page after level 2 does not show the failure and its reason:\n%s", host2)
	}
	if hist := regexp.MustCompile(`<td class="result (\w+)">`).FindAllStringSubmatch(host2, -1); len(hist) != 2 || hist[0][1] != "failed" || hist[1][1] != "ok" {
		t.Errorf("host history after level 2: results %v, want failed then ok", hist)
	}
	t.Logf("guest ran in %s", res.Duration.Round(time.Second))
}

// guestPage reassembles the page the guest printed as "NAME| " lines.
func guestPage(output, name string) string {
	var b strings.Builder
	for _, line := range strings.Split(output, "\n") {
		if rest, ok := strings.CutPrefix(strings.TrimRight(line, "\r"), name+"| "); ok {
			b.WriteString(rest)
			b.WriteByte('\n')
		}
	}
	return b.String()
}

var (
	rowRE  = regexp.MustCompile(`(?s)<tr>(.*?)</tr>`)
	cellRE = regexp.MustCompile(`(?s)<td[^>]*>(.*?)</td>`)
	tagRE  = regexp.MustCompile(`<[^>]*>`)
)

// hostRow returns the text of the hosts table's row for hostname, its
// cells separated by " | ".
func hostRow(t *testing.T, page, hostname string) string {
	t.Helper()
	if page == "" {
		t.Fatalf("the guest printed no page for %s", hostname)
	}
	for _, r := range rowRE.FindAllStringSubmatch(page, -1) {
		var cells []string
		for _, c := range cellRE.FindAllStringSubmatch(r[1], -1) {
			cells = append(cells, strings.Join(strings.Fields(tagRE.ReplaceAllString(c[1], "")), " "))
		}
		if len(cells) > 0 && cells[0] == hostname {
			return strings.Join(cells, " | ")
		}
	}
	t.Fatalf("no row for %s in the page:\n%s", hostname, page)
	return ""
}

// wantCells checks the row's first five cells: host, kernel, level,
// channel, last result.
func wantCells(t *testing.T, what, row string, want ...string) {
	t.Helper()
	cells := strings.Split(row, " | ")
	if len(cells) < len(want) || !slices.Equal(cells[:len(want)], want) {
		t.Errorf("%s: row %q, want it to start %q", what, row, strings.Join(want, " | "))
	}
}
