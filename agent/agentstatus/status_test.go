package agentstatus

import (
	"os"
	"path/filepath"
	"testing"
)

func TestStateDirAndRead(t *testing.T) {
	dir := t.TempDir()
	state := filepath.Join(dir, "state")
	if err := os.MkdirAll(filepath.Join(state, "agent"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(StatusPath(state), []byte(`{"repository":"https://r.example","channel":"test","available_level":3,"applied_level":2,"user":[{"build_id":"beef","name":"libz","level":1}]}`), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, config string // config "" : no file
		wantDir      string
		wantErr      bool
	}{
		{"state_dir set", "server = \"https://r.example\"\nstate_dir = \"" + state + "\"\nchannel = \"test\"\n", state, false},
		{"default", "server = \"https://r.example\"\n", DefaultStateDir, false},
		{"unknown keys are the agent's business", "state_dir = \"" + state + "\"\nfuture_key = 1\n", state, false},
		{"not TOML", "state_dir = \n", "", true},
		{"no file", "", "", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "agent.toml")
			if tc.config != "" {
				if err := os.WriteFile(path, []byte(tc.config), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			got, err := StateDir(path)
			if (err != nil) != tc.wantErr || got != tc.wantDir {
				t.Fatalf("StateDir = %q, %v; want %q, error %v", got, err, tc.wantDir, tc.wantErr)
			}
			s := Read(path)
			if tc.wantDir == state {
				if s == nil || s.AvailableLevel != 3 || s.AppliedLevel != 2 || len(s.User) != 1 || s.User[0].Name != "libz" {
					t.Fatalf("Read = %+v", s)
				}
			} else if s != nil && tc.wantErr {
				t.Fatalf("Read = %+v, want nil", s)
			}
		})
	}
	t.Setenv("LIVEFIX_AGENT_CONFIG", "/x/agent.toml")
	if got := ConfigPath(""); got != "/x/agent.toml" {
		t.Errorf("ConfigPath from the environment = %q", got)
	}
	if got := ConfigPath("/y.toml"); got != "/y.toml" {
		t.Errorf("ConfigPath(flag) = %q", got)
	}
	if s, err := ReadStatus(t.TempDir()); s != nil || err != nil {
		t.Errorf("ReadStatus of a state directory the agent never used = %v, %v", s, err)
	}
}
