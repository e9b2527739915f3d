package fleet

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/livefix/livefix/fleetapi"
	"github.com/livefix/livefix/internal/kerneltest"
	"github.com/livefix/livefix/internal/patchtest"
)

var updateScreenshot = flag.Bool("update", false, "rewrite docs/fleet.png from the browser test")

// browser starts headless Chromium (Debian's chromium package) with a
// fresh profile and nothing running in the background.
func browser(t *testing.T) context.Context {
	t.Helper()
	path, err := exec.LookPath("chromium")
	if err != nil {
		if kerneltest.Required() {
			t.Fatal("chromium not on PATH; run `make setup` (Debian package chromium)")
		}
		t.Skip("chromium not on PATH; run `make setup` (Debian package chromium)")
	}
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(path),
		chromedp.Headless,
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1200, 640),
	}
	actx, cancelA := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelC := chromedp.NewContext(actx)
	t.Cleanup(func() { cancelC(); cancelA() })
	// The first action starts the browser; it lives as long as ctx.
	if err := chromedp.Do(ctx, chromedp.Navigate("about:blank")); err != nil {
		t.Fatalf("start chromium: %v", err)
	}
	return ctx
}

// waitURL waits until the page's address contains want (a form submitted
// or a link followed: the old page's elements are no proof).
func waitURL(t *testing.T, ctx context.Context, want string) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		loc, err := chromedp.Run(ctx, chromedp.Location())
		if err == nil && strings.Contains(loc, want) {
			if err := chromedp.Do(ctx, chromedp.WaitReady(chromedp.CSS(`body`))); err != nil {
				t.Fatal(err)
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("page at %q, waited for %q (%v)", loc, want, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// An operator logs in, filters the fleet, opens a host and promotes a
// level, in a real browser, with JavaScript doing nothing but the clicks.
func TestBrowserDashboard(t *testing.T) {
	ctx := browser(t)
	data := t.TempDir()
	publishTwo(t, data)
	key := orgKey(t, run(t, "", "livefix-server", "org", "add", "acme", "--data", data))
	run(t, "operator password\n", "livefix-server", "user", "add", "olga", "--role", "admin", "--password-file", "-", "--data", data)
	base := serve(t, "--data", data)
	for i, h := range []struct {
		name, release, channel, result, err string
		level                               int64
	}{
		{"db-01", patchtest.Release, "stable", "ok", "", 1},
		{"db-02", patchtest.Release, "stable", "ok", "", 1},
		{"web-01", patchtest.Release, "stable", "failed", "load lp1.ko: transition did not complete", 0},
		{"web-02", patchtest.Release, "test", "ok", "", 2},
		{"web-03", "6.1.0-28-amd64", "stable", "ok", "", 0},
		{"cache-01", patchtest.Release, "stable", "stalled", "transition did not complete: rolled back", 0},
	} {
		cl := &fleetapi.Client{BaseURL: base}
		r, err := cl.Register(ctx, key, h.name)
		if err != nil {
			t.Fatal(err)
		}
		bid := buildID
		if h.release != patchtest.Release {
			bid = fmt.Sprintf("%040x", i)
		}
		if _, err := cl.CheckIn(ctx, r.Credential, fleetapi.CheckIn{HostID: r.HostID, Hostname: h.name, KernelRelease: h.release,
			BuildID: bid, Level: h.level, AgentVersion: "0.9.0", Channel: h.channel, Result: h.result, Error: h.err,
			ResultAt: time.Now().Add(-time.Duration(i) * time.Minute)}); err != nil {
			t.Fatal(err)
		}
	}

	if err := chromedp.Do(ctx,
		chromedp.Navigate(base+"/fleet"),
		chromedp.WaitVisible(chromedp.CSS(`#user`)),
		chromedp.SendKeys(chromedp.CSS(`#user`), "olga"),
		chromedp.SendKeys(chromedp.CSS(`#password`), "operator password"),
		chromedp.Click(chromedp.CSS(`#login`)),
		chromedp.WaitVisible(chromedp.CSS(`table.hosts`)),
		chromedp.Click(chromedp.CSS(`input[name=failed]`)),
		chromedp.Click(chromedp.CSS(`#apply`)),
	); err != nil {
		t.Fatalf("log in and filter: %v", err)
	}
	waitURL(t, ctx, "failed=1")
	rows, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS(`table.hosts tbody`)))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(rows, "web-01") || strings.Contains(rows, "db-01") || strings.Contains(rows, "cache-01") {
		t.Fatalf("failed filter shows:\n%s", rows)
	}
	if err := chromedp.Do(ctx,
		chromedp.Click(chromedp.CSS(`table.hosts tbody a[href^="/hosts/"]`)),
	); err != nil {
		t.Fatalf("open host: %v", err)
	}
	waitURL(t, ctx, "/hosts/")
	if err := chromedp.Do(ctx, chromedp.WaitVisible(chromedp.CSS(`#level`))); err != nil {
		t.Fatal(err)
	}
	hostText, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS(`main`)))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(hostText, "web-01") || !strings.Contains(hostText, "transition did not complete") || !strings.Contains(hostText, "History") {
		t.Fatalf("host page:\n%s", hostText)
	}
	if err := chromedp.Do(ctx,
		chromedp.Navigate(base+"/levels"),
		chromedp.Click(chromedp.CSS("#promote-"+buildID[:12]+"-2")),
		chromedp.WaitVisible(chromedp.CSS(`p.flash`)),
	); err != nil {
		t.Fatalf("promote: %v", err)
	}
	flash, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS(`p.flash`)))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(flash, "promote "+buildID+"/2: done") {
		t.Fatalf("promote flash %q", flash)
	}
	if out := run(t, "", "livefix-server", "list", "--data", data, "--json"); strings.Count(out, `"stable"`) < 2 {
		t.Fatalf("level 2 not on stable after the promotion:\n%s", out)
	}

	// The fleet page, for docs/fleet.png.
	if err := chromedp.Do(ctx,
		chromedp.Navigate(base+"/fleet"),
		chromedp.WaitVisible(chromedp.CSS(`table.hosts`)),
	); err != nil {
		t.Fatalf("fleet page: %v", err)
	}
	png, err := chromedp.Run(ctx, chromedp.CaptureScreenshot())
	if err != nil {
		t.Fatalf("screenshot: %v", err)
	}
	if len(png) < 1000 || string(png[1:4]) != "PNG" {
		t.Fatalf("screenshot is not a PNG (%d bytes)", len(png))
	}
	if *updateScreenshot {
		if err := os.WriteFile(filepath.Join("..", "..", "docs", "fleet.png"), png, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}
