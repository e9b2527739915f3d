package main

import (
	"bytes"
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"

	"github.com/livefix/livefix/internal/patchtest"
	"github.com/livefix/livefix/patchrepo"
)

const bid = "f75010e906ea0123456789abcdef0123456789ab"

func run(t *testing.T, f func([]string, *bytes.Buffer, *bytes.Buffer) int, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	code := f(args, &out, &errb)
	return code, out.String(), errb.String()
}

func TestCommands(t *testing.T) {
	data := filepath.Join(t.TempDir(), "data")
	offline := filepath.Join(t.TempDir(), "usb")
	keys := func(a []string, o, e *bytes.Buffer) int { return runKeys(a, o, e) }
	publish := func(a []string, o, e *bytes.Buffer) int { return runPublish(a, o, e) }
	list := func(a []string, o, e *bytes.Buffer) int { return runList(a, o, e) }
	promote := func(a []string, o, e *bytes.Buffer) int { return runChange("promote", a, o, e) }
	revoke := func(a []string, o, e *bytes.Buffer) int { return runChange("revoke", a, o, e) }

	if code, out, errs := run(t, keys, "init", "--data", data, "--root-keys", offline, "--keys", "targets=2", "--threshold", "targets=2"); code != 0 || !strings.Contains(out, "offline") {
		t.Fatalf("keys init: %d %s %s", code, out, errs)
	}
	if code, _, errs := run(t, keys, "init", "--data", data); code != 1 || !strings.Contains(errs, "already exists") {
		t.Fatalf("second keys init: %d %s", code, errs)
	}
	ko, _ := patchtest.KernelPatch{Name: "lf_a_l1", Level: 1, BuildID: bid, CVEs: []string{"CVE-2024-1086"}}.Write(t.TempDir())
	if code, _, errs := run(t, publish, ko, "--data", data); code != 2 || !strings.Contains(errs, "--channel") {
		t.Fatalf("publish without channel: %d %s", code, errs)
	}
	if code, out, errs := run(t, publish, ko, "--data", data, "--channel", "test", "--summary", "nft fix"); code != 0 || !strings.Contains(out, "level 1") {
		t.Fatalf("publish: %d %s %s", code, out, errs)
	}
	if code, _, errs := run(t, publish, ko, "--data", data, "--channel", "test"); code != 1 || !strings.Contains(errs, "not higher") {
		t.Fatalf("republish: %d %s", code, errs)
	}
	if code, out, errs := run(t, promote, bid, "1", "--data", data); code != 0 || !strings.Contains(out, "on stable") {
		t.Fatalf("promote: %d %s %s", code, out, errs)
	}
	if code, _, errs := run(t, revoke, bid, "1", "--data", data); code != 1 || !strings.Contains(errs, "reason is required") {
		t.Fatalf("revoke without reason: %d %s", code, errs)
	}
	if code, _, errs := run(t, revoke, bid, "x", "--data", data, "--reason", "r"); code != 2 {
		t.Fatalf("revoke bad level: %d %s", code, errs)
	}
	if code, out, errs := run(t, revoke, bid, "1", "--data", data, "--reason", "breaks boot"); code != 0 || !strings.Contains(out, "revoked") {
		t.Fatalf("revoke: %d %s %s", code, out, errs)
	}
	code, out, _ := run(t, list, "--data", data, "--json")
	var es []patchrepo.Entry
	if err := json.Unmarshal([]byte(out), &es); code != 0 || err != nil || len(es) != 1 || es[0].Revoked == nil || es[0].Summary != "nft fix" || es[0].Channel != "stable" {
		t.Fatalf("list --json: %d %v %s", code, err, out)
	}
	if code, out, _ := run(t, list, "--data", data); code != 0 || !strings.Contains(out, "revoked: breaks boot") || !strings.Contains(out, "CVE-2024-1086") {
		t.Fatalf("list: %s", out)
	}
	if code, _, errs := run(t, keys, "rotate", "timestamp", "--data", data); code != 1 || !strings.Contains(errs, "root keys are needed") {
		t.Fatalf("rotate without offline root: %d %s", code, errs)
	}
	if code, out, errs := run(t, keys, "rotate", "timestamp", "--data", data, "--root-keys", offline); code != 0 || !strings.Contains(out, "root version 2") {
		t.Fatalf("rotate: %d %s %s", code, out, errs)
	}
	if code, out, errs := run(t, func(a []string, o, e *bytes.Buffer) int { return runRefresh(a, o, e) }, "--data", data); code != 0 || !strings.Contains(out, "valid until") {
		t.Fatalf("refresh: %d %s %s", code, out, errs)
	}
	if code, _, errs := run(t, list, "--data", t.TempDir()); code != 1 || !strings.Contains(errs, "keys init") {
		t.Fatalf("list of no repository: %d %s", code, errs)
	}
}
