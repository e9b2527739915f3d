package fleetserver

import (
	"bytes"
	"context"
	"mime/multipart"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/livefix/livefix/fleetdb"
	"github.com/livefix/livefix/internal/patchtest"
	"github.com/livefix/livefix/patchrepo"
)

const testBuildID = "0123456789abcdef0123456789abcdef01234567"

// The dashboard drives the real signed repository: it lists what the CLI
// published, and its promote, revoke and publish change the repository.
func TestDashboardRepository(t *testing.T) {
	ts := newTestServer(t, func(c *Config) { c.Repository = PatchRepository(c.DataDir) })
	ctx := context.Background()
	repo, err := patchrepo.Init(ts.dir, patchrepo.InitOptions{})
	if err != nil {
		t.Fatal(err)
	}
	src := t.TempDir()
	for lv, ch := range []string{1: "stable", 2: "test"} {
		if lv == 0 {
			continue
		}
		ko, err := patchtest.KernelPatch{Name: "lp" + string(rune('0'+lv)), Level: lv, BuildID: testBuildID, CVEs: []string{"CVE-2024-100" + string(rune('0'+lv))}}.Write(src)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := repo.Publish(ko, patchrepo.PublishOptions{Channel: ch}); err != nil {
			t.Fatal(err)
		}
	}
	ts.store.AddUser(ctx, "alice", "alice password", fleetdb.RoleAdmin, false)
	b := newBrowser(t, ts)
	b.login("alice", "alice password")
	code, page := b.get("/levels")
	if code != 200 || !strings.Contains(page, "CVE-2024-1002") || !strings.Contains(page, "Promote to stable") || strings.Contains(page, "no patch repository") {
		t.Fatalf("levels page %d:\n%s", code, page)
	}
	tok := csrfOf(t, page)
	code, page = b.post("/levels/promote", map[string][]string{"csrf": {tok}, "build_id": {testBuildID}, "level": {"2"}, "channel": {"stable"}})
	if code != 200 || !strings.Contains(page, "promote "+testBuildID+"/2: done") {
		t.Fatalf("promote: %d\n%s", code, page)
	}
	es, _ := repo.List()
	if len(es) != 2 || es[1].Channel != "stable" {
		t.Fatalf("repository after promote: %+v", es[1].Custom)
	}
	lv, _ := ts.store.Levels(ctx, "")
	if len(lv) != 2 || lv[1].Channel != "stable" {
		t.Fatalf("mirror after promote: %+v", lv)
	}
	// Promoting an unknown level fails in the repository and is audited.
	code, page = b.post("/levels/promote", map[string][]string{"csrf": {tok}, "build_id": {testBuildID}, "level": {"9"}, "channel": {"stable"}})
	if code != 200 || !strings.Contains(page, "not published") {
		t.Fatalf("promote unknown: %d", code)
	}
	code, page = b.post("/levels/revoke", map[string][]string{"csrf": {tok}, "build_id": {testBuildID}, "level": {"2"}, "reason": {"crashes on boot"}})
	if code != 200 || !strings.Contains(page, "revoke "+testBuildID+"/2: done") {
		t.Fatalf("revoke: %d\n%s", code, page)
	}
	if es, _ := repo.List(); es[1].Revoked == nil || es[1].Revoked.Reason != "crashes on boot" {
		t.Fatalf("not revoked: %+v", es[1].Custom)
	}

	// Publish through the upload form.
	ko, _ := patchtest.KernelPatch{Name: "lp3", Level: 3, BuildID: testBuildID}.Write(src)
	upload := func(files [][2]string) (int, string) {
		var body bytes.Buffer
		mw := multipart.NewWriter(&body)
		mw.WriteField("csrf", tok)
		mw.WriteField("channel", "test")
		for _, f := range files {
			field, path := f[0], f[1]
			name := filepath.Base(path)
			if i := strings.Index(field, ":"); i >= 0 {
				field, name = field[:i], field[i+1:]
			}
			w, _ := mw.CreateFormFile(field, name)
			data, _ := os.ReadFile(path)
			w.Write(data)
		}
		mw.Close()
		resp, err := b.c.Post(ts.URL+"/levels/publish", mw.FormDataContentType(), &body)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var out bytes.Buffer
		out.ReadFrom(resp.Body)
		return resp.StatusCode, out.String()
	}
	// (Go's multipart reader already drops directories from file names.)
	code, page = upload([][2]string{{"patch:..lp3.ko", ko}, {"manifest", strings.TrimSuffix(ko, ".ko") + ".json"}})
	if code != 200 || !strings.Contains(page, "refused file name") {
		t.Fatalf("traversal upload: %d\n%s", code, page)
	}
	code, page = upload([][2]string{{"patch", ko}, {"manifest", strings.TrimSuffix(ko, ".ko") + ".json"}})
	if code != 200 || !strings.Contains(page, "publish "+testBuildID+"/3") {
		t.Fatalf("publish: %d\n%s", code, page)
	}
	if es, _ := repo.List(); len(es) != 3 || es[2].Level != 3 || es[2].Channel != "test" {
		t.Fatalf("repository after publish: %d entries", len(es))
	}
	if entries, _ := os.ReadDir(filepath.Join(ts.dir, "tmp")); len(entries) != 0 {
		t.Fatalf("upload left %d files in DATA/tmp", len(entries))
	}
	log, _ := ts.store.AuditLog(ctx, 10)
	var actions []string
	for _, e := range log {
		actions = append(actions, e.Action+map[bool]string{true: ":ok", false: ":failed"}[e.OK])
	}
	if got := strings.Join(actions, " "); got != "publish:ok publish:failed revoke:ok promote:failed promote:ok login:ok" {
		t.Fatalf("audit log: %s", got)
	}
	// The repository is served at /repo/ for the agents.
	resp, err := http.Get(ts.URL + "/repo/metadata/timestamp.json")
	if err != nil || resp.StatusCode != 200 || resp.Header.Get("ETag") == "" {
		t.Fatalf("timestamp: %v %v", resp, err)
	}
	resp.Body.Close()
}
