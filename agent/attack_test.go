package agent

import (
	"context"
	"crypto/ed25519"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/livefix/livefix/internal/patchtest"
	"github.com/livefix/livefix/patchrepo"
	"github.com/sigstore/sigstore/pkg/signature"
	"github.com/theupdateframework/go-tuf/v2/metadata"
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
	// Each attack meets the agent that verified level 1 (its trusted
	// metadata in memory, as in the daemon) and a restarted one (the
	// trusted metadata read back from its cache).
	for _, restart := range []bool{false, true} {
		for _, tt := range tests {
			name := tt.name + map[bool]string{false: "/in memory", true: "/after restart"}[restart]
			t.Run(name, func(t *testing.T) { runAttack(t, tt.base, tt.attack, tt.want, tt.msg, restart) })
		}
	}
}

// runAttack brings a host to level 1 (when withBase), runs the attack's
// setup and an update (by a new Agent on the same state when restart),
// and checks the refusal: error want saying msg (or, with want nil, a
// plan whose reason says msg), level, status and no download left.
func runAttack(t *testing.T, withBase bool, attack func(t *testing.T, e *env), want error, msg string, restart bool) {
	e := newEnv(t, "")
	base, applies := 0, ""
	if withBase {
		e.publish(1, "stable", patchtest.KernelPatch{})
		if _, err := e.update(false); err != nil {
			t.Fatal(err)
		}
		base, applies = 1, "1"
	}
	attack(t, e)
	if restart {
		e.agent = &Agent{Config: e.agent.Config, Kernel: e.kernel, Version: "1.0.0", Progress: io.Discard}
	}
	rep, err := e.update(false)
	switch {
	case want != nil && !errors.Is(err, want):
		t.Fatalf("update: %v; want %v", err, want)
	case want != nil && !strings.Contains(strings.ToLower(err.Error()), msg):
		t.Fatalf("error %q does not say %q", err, msg)
	case want == nil && err != nil:
		t.Fatalf("update: %v", err)
	case want == nil && !strings.Contains(rep.Kernel.Reason, msg):
		t.Fatalf("reason %q does not say %q", rep.Kernel.Reason, msg)
	}
	t.Logf("refused: %v %s", err, rep.Kernel.Reason)
	e.wantLevel(base, applies)
	st, _ := ReadStatus(e.agent.Config.StateDir)
	if st == nil || st.AppliedLevel != base {
		t.Fatalf("status %+v", st)
	}
	if want != nil && (st.Error == "" || !strings.Contains(st.Result, "kept")) {
		t.Fatalf("status does not report the refusal: %+v", st)
	}
	if ents, _ := os.ReadDir(e.agent.downloadDir()); len(ents) != 0 {
		t.Fatalf("downloads left behind: %v", ents)
	}
}

// TestTrustSharedCache: an agent whose trusted metadata is in memory
// (the daemon) notices that another process (livefix update) verified
// newer metadata into the same cache, and so refuses a replay of the
// older timestamp it had itself trusted.
func TestTrustSharedCache(t *testing.T) {
	e := newEnv(t, "")
	e.publish(1, "stable", patchtest.KernelPatch{})
	if _, err := e.update(false); err != nil {
		t.Fatal(err)
	}
	old, _ := os.ReadFile(repoFile(t, e, "metadata/timestamp.json"))
	e.publish(2, "stable", patchtest.KernelPatch{})
	other := &Agent{Config: e.agent.Config, Kernel: e.kernel, Version: "1.0.0", Progress: io.Discard}
	if _, err := other.Update(context.Background(), UpdateOptions{DryRun: true}); err != nil {
		t.Fatal(err)
	}
	e.setMangle(func(w http.ResponseWriter, r *http.Request) bool {
		if strings.HasSuffix(r.URL.Path, "/timestamp.json") {
			w.Write(old)
			return true
		}
		return false
	})
	if _, err := e.update(false); !errors.Is(err, ErrUntrusted) || !strings.Contains(err.Error(), "version") {
		t.Fatalf("replayed timestamp after another process trusted a newer one: %v; want a version refusal", err)
	}
	e.wantLevel(1, "1")
}

// TestKeyRotation: the repository rotates each role's keys in turn, and
// a new level follows each rotation; the same agent (its trusted
// metadata in memory) follows the root chain and takes every level, and
// so does a new host registered with the first root.
func TestKeyRotation(t *testing.T) {
	e := newEnv(t, "")
	e.publish(1, "stable", patchtest.KernelPatch{})
	if _, err := e.update(false); err != nil {
		t.Fatal(err)
	}
	for i, role := range patchrepo.Roles {
		if _, err := e.repo.Rotate(role, patchrepo.RotateOptions{}); err != nil {
			t.Fatalf("rotate %s: %v", role, err)
		}
		e.publish(i+2, "stable", patchtest.KernelPatch{})
		if _, err := e.update(false); err != nil {
			t.Fatalf("update after rotating %s: %v", role, err)
		}
		if l, _ := e.kernel.get(); l != i+2 {
			t.Fatalf("level %d after rotating %s; want %d", l, role, i+2)
		}
	}
	fresh := &fakeKernel{id: kernelID}
	cfg := *e.agent.Config
	cfg.StateDir = t.TempDir()
	a := &Agent{Config: &cfg, Kernel: fresh, Version: "1.0.0", Progress: io.Discard}
	if _, err := a.Update(context.Background(), UpdateOptions{}); err != nil {
		t.Fatalf("new host: %v", err)
	}
	if l, _ := fresh.get(); l != len(patchrepo.Roles)+1 {
		t.Fatalf("new host at level %d", l)
	}
}

// TestFastForwardRecovery: an attacker holding the timestamp key makes
// the host trust a timestamp with a far higher version; the operator
// rotates the timestamp key; the host then takes new timestamps of the
// lower, real versions again (the specification's recovery: metadata
// trusted under the old root's keys is verified again under the new
// root, and what the old key signed no longer counts).
func TestFastForwardRecovery(t *testing.T) {
	e := newEnv(t, "")
	e.publish(1, "stable", patchtest.KernelPatch{})
	if _, err := e.update(false); err != nil {
		t.Fatal(err)
	}
	keys, _ := filepath.Glob(filepath.Join(e.repo.Dir, "keys", metadata.TIMESTAMP, "*.pem"))
	if len(keys) != 1 {
		t.Fatalf("timestamp keys %v", keys)
	}
	b, _ := os.ReadFile(keys[0])
	blk, _ := pem.Decode(b)
	priv, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	signer, err := signature.LoadED25519Signer(priv.(ed25519.PrivateKey))
	if err != nil {
		t.Fatal(err)
	}
	ts, err := metadata.Timestamp().FromFile(repoFile(t, e, "metadata/timestamp.json"))
	if err != nil {
		t.Fatal(err)
	}
	ts.Signed.Version += 1000
	ts.ClearSignatures()
	if _, err := ts.Sign(signer); err != nil {
		t.Fatal(err)
	}
	forged, _ := ts.ToBytes(true)
	e.setMangle(func(w http.ResponseWriter, r *http.Request) bool {
		if strings.HasSuffix(r.URL.Path, "/timestamp.json") {
			w.Write(forged)
			return true
		}
		return false
	})
	if _, err := e.update(false); err != nil {
		t.Fatalf("update with the fast-forwarded timestamp: %v", err)
	}
	e.setMangle(nil)
	if _, err := e.repo.Rotate(metadata.TIMESTAMP, patchrepo.RotateOptions{}); err != nil {
		t.Fatal(err)
	}
	e.publish(2, "stable", patchtest.KernelPatch{})
	if _, err := e.update(false); err != nil {
		t.Fatalf("update after the timestamp key was rotated: %v", err)
	}
	e.wantLevel(2, "1,2")
}
