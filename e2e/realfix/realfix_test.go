package realfix_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/livefix/livefix/internal/e2etest"
	"github.com/livefix/livefix/internal/kbuild"
	"github.com/livefix/livefix/internal/kerneltest"
	"github.com/livefix/livefix/internal/kernelvm"
	"github.com/livefix/livefix/klp"
)

const (
	countEnv   = "LIVEFIX_REALFIX_COUNT"
	onlyEnv    = "LIVEFIX_REALFIX_ONLY"
	goldenFile = "testdata/outcomes.golden"
	buildJobs  = 3 // livefix-build processes at once; compiles queue on the tree's lock anyway
)

// fixRun is one fix's way through the test.
type fixRun struct {
	n     int
	fix   Fix
	name  string // module and patch name
	code  int    // livefix-build exit status
	msg   string // its error, first line, paths replaced
	m     *klp.Manifest
	guest string // the guest's verdict: "ok", or the step that failed
	// pending lists patched module objects that were not loaded in the
	// guest (the patch was loaded with them pending).
	pending []string
	secs    float64
}

// count is LIVEFIX_REALFIX_COUNT (default all of the corpus).
func count(t *testing.T, max int) int {
	v := os.Getenv(countEnv)
	if v == "" {
		return max
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 || n > max {
		t.Fatalf("%s=%q: want 1 to %d", countEnv, v, max)
	}
	return n
}

// TestRealFixes builds the corpus's fixes, each reversed onto the
// packaged tree (--base-patch puts the old file on both sides, --patch is
// the fix), as a user runs livefix-build kernel, then loads every built
// module in one boot: insmod, transition complete, each function in
// sysfs, disable, unpatch complete, rmmod. The outcome of each fix is
// compared with testdata/outcomes.golden (-update rewrites it), so every
// regression and every improvement shows.
func TestRealFixes(t *testing.T) {
	tgt := kerneltest.RequireVM(t)
	requireTarballs(t, tgt)
	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Minute)
	defer cancel()
	c := loadCorpus(t)
	n := count(t, len(c.Fixes))
	only := onlyFixes(t, len(c.Fixes))
	var fixes []Fix
	var numbers []int
	for i, f := range c.Fixes[:n] {
		if only == nil || only[i+1] {
			fixes = append(fixes, f)
			numbers = append(numbers, i+1)
		}
	}
	partial := len(fixes) != len(c.Fixes)
	tmp := t.TempDir()
	srcs := extractCorpus(ctx, t, tgt, fixes, filepath.Join(tmp, "src"))
	_, livefixBuild := e2etest.Tools(t)
	outDir := filepath.Join(tmp, "out")

	runs := make([]*fixRun, len(fixes))
	sem := make(chan struct{}, buildJobs)
	var wg sync.WaitGroup
	start := time.Now()
	for i, f := range fixes {
		r := &fixRun{n: numbers[i], fix: f, name: fmt.Sprintf("rf%02d", numbers[i])}
		runs[i] = r
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			build(ctx, t, livefixBuild, r, srcs[f.Path], filepath.Join(tmp, "work", r.name), outDir)
		}()
	}
	wg.Wait()
	t.Logf("built %d fixes in %.0fs", len(runs), time.Since(start).Seconds())
	if ctx.Err() != nil {
		t.Fatal(ctx.Err())
	}

	runGuest(ctx, t, tgt, runs, outDir)

	var b strings.Builder
	fmt.Fprintf(&b, "# e2e/realfix: one line per fix of testdata/corpus.json (go test -run TestRealFixes -update rewrites it)\n")
	working := 0
	for _, r := range runs {
		line := outcome(r)
		if strings.HasPrefix(line, "working") {
			working++
		}
		fmt.Fprintf(&b, "%02d %s: %s\n", r.n, r.fix.Path, line)
	}
	fmt.Fprintf(&b, "# working: %d of %d\n", working, len(runs))
	got := b.String()
	t.Logf("outcomes:\n%s", got)
	want, err := os.ReadFile(goldenFile)
	if *update {
		if partial {
			// Rewrite the lines of the fixes this run built, keep the rest.
			if err != nil {
				t.Fatalf("%v (a partial run updates an existing golden file)", err)
			}
			got = mergeGolden(string(want), fixLines(got))
		}
		if err := os.WriteFile(goldenFile, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	if err != nil {
		t.Fatalf("%v (write it with -update)", err)
	}
	// Fix lines by number; a partial run (LIVEFIX_REALFIX_COUNT,
	// LIVEFIX_REALFIX_ONLY) compares its own fixes only.
	wantLines := fixLines(string(want))
	gotLines := fixLines(got)
	if partial {
		t.Logf("partial run: comparing %d of %d outcomes", len(fixes), len(c.Fixes))
	} else if w, g := strings.Split(strings.TrimRight(string(want), "\n"), "\n"), strings.Split(strings.TrimRight(got, "\n"), "\n"); w[len(w)-1] != g[len(g)-1] {
		t.Errorf("count changed (-update accepts it): was %q, now %q", w[len(w)-1], g[len(g)-1])
	}
	for _, num := range numbers {
		if wantLines[num] != gotLines[num] {
			t.Errorf("outcome of fix %02d changed (%s; -update accepts it):\n  was: %s\n  now: %s", num, goldenFile, wantLines[num], gotLines[num])
		}
	}
}

// mergeGolden replaces the golden lines of the given fixes and recounts.
func mergeGolden(golden string, lines map[int]string) string {
	var b strings.Builder
	working, total := 0, 0
	for _, l := range strings.Split(strings.TrimRight(golden, "\n"), "\n") {
		num, err := strconv.Atoi(strings.SplitN(l, " ", 2)[0])
		if err != nil {
			if !strings.HasPrefix(l, "# working:") {
				b.WriteString(l + "\n")
			}
			continue
		}
		if nl, ok := lines[num]; ok {
			l = nl
		}
		total++
		if strings.HasPrefix(strings.SplitN(l, ": ", 2)[1], "working") {
			working++
		}
		b.WriteString(l + "\n")
	}
	fmt.Fprintf(&b, "# working: %d of %d\n", working, total)
	return b.String()
}

// fixLines maps fix numbers to their golden lines.
func fixLines(text string) map[int]string {
	m := map[int]string{}
	for _, l := range strings.Split(text, "\n") {
		if num, err := strconv.Atoi(strings.SplitN(l, " ", 2)[0]); err == nil {
			m[num] = l
		}
	}
	return m
}

// onlyFixes parses LIVEFIX_REALFIX_ONLY: fix numbers, comma-separated
// (nil when unset), to re-run a few fixes while triaging.
func onlyFixes(t *testing.T, max int) map[int]bool {
	v := os.Getenv(onlyEnv)
	if v == "" {
		return nil
	}
	m := map[int]bool{}
	for _, f := range strings.Split(v, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 || n > max {
			t.Fatalf("%s=%q: want fix numbers 1 to %d, comma-separated", onlyEnv, v, max)
		}
		m[n] = true
	}
	return m
}

// build runs livefix-build kernel for one fix.
func build(ctx context.Context, t *testing.T, livefixBuild string, r *fixRun, src fixSources, work, outDir string) {
	if err := os.MkdirAll(work, 0o755); err != nil {
		t.Error(err)
		return
	}
	fix, _, err1 := fixPatch(ctx, r.fix.Path, src.old, src.new)
	base, _, err2 := fixPatch(ctx, r.fix.Path, src.new, src.old)
	if err := errors.Join(err1, err2); err != nil {
		t.Error(err)
		return
	}
	fixFile, baseFile := filepath.Join(work, "fix.patch"), filepath.Join(work, "reverse.patch")
	if err := errors.Join(os.WriteFile(fixFile, fix, 0o644), os.WriteFile(baseFile, base, 0o644)); err != nil {
		t.Error(err)
		return
	}
	start := time.Now()
	cmd := exec.CommandContext(ctx, livefixBuild, "kernel", "--name", r.name, "--json", "-o", outDir,
		"--base-patch", baseFile, "--patch", fixFile, "--summary", "real fix to "+r.fix.Path+" ("+r.fix.From+" to "+packagedVersion+")")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	r.secs = time.Since(start).Seconds()
	var ee *exec.ExitError
	switch {
	case err == nil:
		var m klp.Manifest
		if err := json.Unmarshal(stdout.Bytes(), &m); err != nil {
			t.Errorf("%s: manifest: %v", r.name, err)
			r.code, r.msg = -1, "no manifest"
			return
		}
		r.m = &m
	case errors.As(err, &ee):
		r.code = ee.ExitCode()
		r.msg = buildError(stderr.String(), work)
	default:
		t.Errorf("%s: %v", r.name, err)
		r.code, r.msg = -1, err.Error()
	}
	t.Logf("%s %s: exit %d in %.1fs %s", r.name, r.fix.Path, r.code, r.secs, r.msg)
	if testing.Verbose() && r.code != 0 {
		t.Logf("%s stderr:\n%s", r.name, lastLines(stderr.Bytes(), 30))
	}
}

var (
	tmpPathRE = regexp.MustCompile(`/tmp/[^\s:'"]*`)
	treeRE    = regexp.MustCompile(`/[^\s:'"]*/kernel/[0-9][^/\s]*/src/`)
)

// buildError returns livefix-build's error message (its last
// "livefix-build kernel: " line but warnings), first line only, with
// machine-specific paths replaced so that it can be compared.
func buildError(stderr, work string) string {
	var msg string
	lines := strings.Split(stderr, "\n")
	for i, l := range lines {
		if m, ok := strings.CutPrefix(l, "livefix-build kernel: "); ok && !strings.HasPrefix(m, "WARNING") && !strings.HasPrefix(m, "work directory") {
			msg = m
			// A compile error's detail follows on the next lines: keep its
			// first error.
			if strings.HasSuffix(m, "failed:") {
				for _, d := range lines[i+1:] {
					if strings.Contains(d, "error:") {
						msg += " " + strings.TrimSpace(d)
						break
					}
				}
			}
		}
	}
	msg = strings.ReplaceAll(msg, work, "WORK")
	msg = treeRE.ReplaceAllString(msg, "TREE/")
	return tmpPathRE.ReplaceAllString(msg, "TMP")
}

// outcome is a fix's line in the golden file.
func outcome(r *fixRun) string {
	if r.m == nil {
		kind := "failed"
		switch r.code {
		case 3:
			kind = "refused"
		case 4:
			kind = "no functional change"
		case 2:
			kind = "bad input"
		}
		return kind + ": " + r.msg
	}
	var objs, funcs []string
	for _, o := range r.m.Objects {
		objs = append(objs, o.Name)
		for _, f := range o.Functions {
			funcs = append(funcs, o.Name+":"+f.Name)
		}
	}
	what := "[" + strings.Join(objs, ",") + "] " + strings.Join(funcs, " ")
	switch {
	case r.guest != "ok":
		return "built, failed in the guest: " + r.guest + ": " + what
	case len(r.pending) > 0:
		return "working, loaded with object " + strings.Join(r.pending, ",") + " pending (not loadable in the VM): " + what
	}
	return "working: " + what
}

// runGuest boots the packaged kernel once and runs every built module.
func runGuest(ctx context.Context, t *testing.T, tgt kbuild.Target, runs []*fixRun, outDir string) {
	files := map[string]string{}
	var mods []string
	var script strings.Builder
	script.WriteString("PRELOAD='" + strings.Join(preload, " ") + "'\n" + guestScript)
	for _, r := range runs {
		if r.m == nil {
			continue
		}
		files["/root/p/"+r.name+".ko"] = filepath.Join(outDir, r.name+".ko")
		var entries, objs []string
		for _, o := range r.m.Objects {
			if o.Name != "vmlinux" {
				objs = append(objs, o.Name)
				if !slices.Contains(mods, o.Name) {
					mods = append(mods, o.Name)
				}
			}
			for _, f := range o.Functions {
				pos := max(f.Sympos, 1)
				entries = append(entries, fmt.Sprintf("%s/%s,%d", o.Name, f.Name, pos))
			}
		}
		fmt.Fprintf(&script, "fix %s '%s' %s\n", r.name, strings.Join(objs, " "), strings.Join(entries, " "))
	}
	if len(files) == 0 {
		return
	}
	script.WriteString("echo DONE\n")
	res, err := kernelvm.Run(ctx, kernelvm.Config{
		Target:  tgt,
		Script:  script.String(),
		Files:   files,
		Modules: append(slices.Clone(preload), mods...),
		Memory:  1536,
		Timeout: 15 * time.Minute,
		Log:     e2etest.GuestLog(t),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("guest ran in %s", res.Duration.Round(time.Second))
	if !strings.Contains(res.Output, "DONE") {
		t.Fatalf("the guest script did not finish (exit %d):\n%s", res.ExitCode, lastLines([]byte(res.Console), 40))
	}
	verdicts := map[string]string{}
	pending := map[string][]string{}
	for _, l := range strings.Split(res.Output, "\n") {
		f := strings.Fields(l)
		switch {
		case len(f) >= 3 && f[0] == "RESULT":
			verdicts[f[1]] = strings.Join(f[2:], " ")
		case len(f) == 3 && f[0] == "PENDING":
			pending[f[1]] = append(pending[f[1]], f[2])
		}
	}
	for _, r := range runs {
		if r.m == nil {
			continue
		}
		r.guest = verdicts[r.name]
		if r.guest == "" {
			r.guest = "no result"
		}
		r.pending = pending[r.name]
	}
}

// preload are modules the guest loads before the patches' targets: the
// crypto they look up by name (soft dependencies).
var preload = []string{"crc32c_generic", "fcrypt", "pcbc"}

// guestScript defines fix NAME 'OBJS' OBJ/FUNC,POS...: load the module,
// wait for the transition, check each function's sysfs entry, disable,
// wait for the unpatch transition and the patch's removal, rmmod. Each
// fix prints RESULT NAME ok, or RESULT NAME STEP DETAIL; PENDING NAME
// OBJ for a patched module that is not loaded.
const guestScript = `
L=/sys/kernel/livepatch
# The modules the patches target, with their dependencies; one that
# cannot be loaded here leaves its patches' objects pending.
# Crypto the modules ask the crypto API for, soft dependencies that
# modules.dep does not list: libcrc32c needs crc32c, rxrpc's rxkad
# pcbc(fcrypt). A second pass retries modules whose own soft
# dependencies loaded after them.
for m in $PRELOAD; do insmod /lib/modules/$m.ko >/dev/null 2>&1; done
for pass in 1 2; do
	while read m; do
		[ -d /sys/module/$(basename "$m" .ko | tr - _) ] && continue
		insmod "$m" >/dev/null 2>&1 || [ $pass = 1 ] || echo "module $m not loaded"
	done < /lib/modules/load-order
done
settled() { # NAME: wait until no transition is in progress
	i=0
	while [ "$(cat $L/$1/transition 2>/dev/null)" = 1 ]; do
		i=$((i+200)); [ $i -ge 60000 ] && return 1
		usleep 200000
	done
}
fix() {
	n=$1; objs=$2; shift 2
	if ! out=$(insmod /root/p/$n.ko 2>&1); then echo "RESULT $n insmod $out"; return; fi
	if [ ! -d $L/$n ]; then echo "RESULT $n no-sysfs-entry"; rmmod $n; return; fi
	if ! settled $n; then
		echo "RESULT $n transition-stuck $(cat /proc/*/patch_state 2>/dev/null | grep -c 0)"
		echo 0 > $L/$n/enabled; settled $n; i=0
		while [ -d $L/$n ] && [ $i -lt 100 ]; do usleep 200000; i=$((i+1)); done
		rmmod $n 2>/dev/null; return
	fi
	missing=""
	for e in "$@"; do [ -e "$L/$n/$e" ] || missing="$missing $e"; done
	for o in $objs; do [ -d /sys/module/$o ] || echo "PENDING $n $o"; done
	if ! echo 0 > $L/$n/enabled; then echo "RESULT $n disable-failed"; return; fi
	if ! settled $n; then echo "RESULT $n unpatch-stuck"; return; fi
	i=0
	while [ -d $L/$n ] && [ $i -lt 150 ]; do usleep 200000; i=$((i+1)); done
	if [ -d $L/$n ]; then echo "RESULT $n still-in-sysfs-after-disable"; return; fi
	if ! out=$(rmmod $n 2>&1); then echo "RESULT $n rmmod $out"; return; fi
	if [ -n "$missing" ]; then echo "RESULT $n functions-not-in-sysfs$missing"; return; fi
	echo "RESULT $n ok"
}
`
