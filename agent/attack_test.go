package agent

import (
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/livefix/livefix/internal/patchtest"
	"github.com/livefix/livefix/patchrepo"
)

func repoFile(t *testing.T, e *env, glob string) string {
	t.Helper()
	m, err := filepath.Glob(filepath.Join(patchrepo.RepositoryDir(e.repo.Dir), glob))
	if err != nil || len(m) == 0 {
		t.Fatalf("no %s in the repository", glob)
	}
	return m[len(m)-1]
}

func flipByte(t *testing.T, path string, at func(b []byte) int) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	b[at(b)] ^= 0x20
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestAttacks runs each attack against a real HTTP server on loopback:
// the update is refused with a clear message, nothing is applied and the
// host keeps its level (1, applied before the attack, or 0).
func TestAttacks(t *testing.T) {
	tests := []struct {
		name string
		// before runs with level 1 published (stable) and applied when
		// base is true; it sets up the attack, which targets level 2.
		base   bool
		attack func(t *testing.T, e *env)
		want   error
		msg    string
	}{
		{"tampered target", true, func(t *testing.T, e *env) {
			e.publish(2, "stable", patchtest.KernelPatch{})
			flipByte(t, repoFile(t, e, "targets/kernel/*/2/*.ko"), func(b []byte) int { return len(b) / 2 })
		}, ErrUntrusted, "hash"},
		{"tampered metadata", true, func(t *testing.T, e *env) {
			e.publish(2, "stable", patchtest.KernelPatch{})
			p := repoFile(t, e, "metadata/*.targets.json")
			b, _ := os.ReadFile(p)
			n := strings.Replace(string(b), `"level": 2`, `"level": 3`, 1)
			if n == string(b) {
				t.Fatal("nothing to tamper with")
			}
			os.WriteFile(p, []byte(n), 0o644)
		}, ErrUntrusted, "hash verification failed"},
		{"replayed older metadata", true, func(t *testing.T, e *env) {
			old, _ := os.ReadFile(repoFile(t, e, "metadata/timestamp.json"))
			e.publish(2, "stable", patchtest.KernelPatch{})
			if _, err := e.update(true); err != nil { // the host sees the new version
				t.Fatal(err)
			}
			e.setMangle(func(w http.ResponseWriter, r *http.Request) bool {
				if strings.HasSuffix(r.URL.Path, "/timestamp.json") {
					w.Write(old)
					return true
				}
				return false
			})
		}, ErrUntrusted, "version"},
		{"expired timestamp", true, func(t *testing.T, e *env) {
			e.repo.Now = func() time.Time { return time.Now().Add(-8 * 24 * time.Hour) }
			e.publish(2, "stable", patchtest.KernelPatch{})
		}, ErrUntrusted, "expired"},
		{"signed by a wrong key", true, func(t *testing.T, e *env) {
			other, err := patchrepo.Init(t.TempDir(), patchrepo.InitOptions{})
			if err != nil {
				t.Fatal(err)
			}
			for range 3 { // a higher version than the real one
				if _, err := other.Refresh(); err != nil {
					t.Fatal(err)
				}
			}
			e.publish(2, "stable", patchtest.KernelPatch{})
			forged, _ := os.ReadFile(filepath.Join(patchrepo.RepositoryDir(other.Dir), "metadata", "timestamp.json"))
			os.WriteFile(repoFile(t, e, "metadata/timestamp.json"), forged, 0o644)
		}, ErrUntrusted, "signature"},
		{"truncated download", true, func(t *testing.T, e *env) {
			e.publish(2, "stable", patchtest.KernelPatch{})
			e.setMangle(func(w http.ResponseWriter, r *http.Request) bool {
				if strings.Contains(r.URL.Path, "/2/") && strings.HasSuffix(r.URL.Path, ".ko") {
					b, _ := os.ReadFile(repoFile(t, e, "targets/kernel/*/2/*.ko"))
					w.Write(b[:len(b)-100])
					return true
				}
				return false
			})
		}, ErrUntrusted, "length"},
		{"endless download", true, func(t *testing.T, e *env) {
			e.publish(2, "stable", patchtest.KernelPatch{})
			e.setMangle(func(w http.ResponseWriter, r *http.Request) bool {
				if strings.Contains(r.URL.Path, "/2/") && strings.HasSuffix(r.URL.Path, ".ko") {
					chunk := make([]byte, 64<<10)
					for range 1 << 14 { // 1 GiB unless the client stops reading
						if _, err := w.Write(chunk); err != nil {
							break
						}
					}
					return true
				}
				return false
			})
		}, ErrUntrusted, "length"},
		{"endless timestamp", true, func(t *testing.T, e *env) {
			e.publish(2, "stable", patchtest.KernelPatch{})
			e.setMangle(func(w http.ResponseWriter, r *http.Request) bool {
				if strings.HasSuffix(r.URL.Path, "/timestamp.json") {
					chunk := []byte(strings.Repeat(" ", 64<<10))
					for range 1 << 14 {
						if _, err := w.Write(chunk); err != nil {
							break
						}
					}
					return true
				}
				return false
			})
		}, ErrUntrusted, "length"},
		{"patch for another kernel", false, func(t *testing.T, e *env) {
			e.publish(1, "stable", patchtest.KernelPatch{BuildID: "aa" + kernelID[2:]})
		}, nil, "no patch published for this kernel"},
		{"revoked level", false, func(t *testing.T, e *env) {
			e.publish(1, "stable", patchtest.KernelPatch{})
			if _, err := e.repo.Revoke(kernelID, 1, "bad"); err != nil {
				t.Fatal(err)
			}
		}, nil, "revoked: bad"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, "")
			base, applies := 0, ""
			if tt.base {
				e.publish(1, "stable", patchtest.KernelPatch{})
				if _, err := e.update(false); err != nil {
					t.Fatal(err)
				}
				base, applies = 1, "1"
			}
			tt.attack(t, e)
			rep, err := e.update(false)
			switch {
			case tt.want != nil && !errors.Is(err, tt.want):
				t.Fatalf("update: %v; want %v", err, tt.want)
			case tt.want != nil && !strings.Contains(strings.ToLower(err.Error()), tt.msg):
				t.Fatalf("error %q does not say %q", err, tt.msg)
			case tt.want == nil && err != nil:
				t.Fatalf("update: %v", err)
			case tt.want == nil && !strings.Contains(rep.Kernel.Reason, tt.msg):
				t.Fatalf("reason %q does not say %q", rep.Kernel.Reason, tt.msg)
			}
			t.Logf("refused: %v %s", err, rep.Kernel.Reason)
			e.wantLevel(base, applies)
			st, _ := ReadStatus(e.agent.Config.StateDir)
			if st == nil || st.AppliedLevel != base {
				t.Fatalf("status %+v", st)
			}
			if tt.want != nil && (st.Error == "" || !strings.Contains(st.Result, "kept")) {
				t.Fatalf("status does not report the refusal: %+v", st)
			}
			if ents, _ := os.ReadDir(e.agent.downloadDir()); len(ents) != 0 {
				t.Fatalf("downloads left behind: %v", ents)
			}
		})
	}
}
