package hostconfig

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		enabled bool
		errHas  []string
	}{
		{"empty", "", true, nil},
		{"comment only", "# nothing\n", true, nil},
		{"enabled", "enabled = true\n", true, nil},
		{"disabled", "# off\nenabled = false\n", false, nil},
		{"unknown key", "enabled = true\n\nenable = false\n", false, []string{"line 3", `"enable"`}},
		{"unknown table key", "[agent]\nurl = \"x\"\n", false, []string{"line 1", `"agent"`}},
		{"bad syntax", "enabled = \n", false, []string{"line 1"}},
		{"bad type", "enabled = \"no\"\n", false, []string{"enabled"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := Parse([]byte(tt.in))
			if tt.errHas == nil {
				if err != nil || c.Enabled != tt.enabled {
					t.Fatalf("got %+v, %v", c, err)
				}
				return
			}
			if err == nil {
				t.Fatalf("no error for %q", tt.in)
			}
			for _, s := range tt.errHas {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("error %q lacks %q", err, s)
				}
			}
		})
	}
}

func TestLoadAndOff(t *testing.T) {
	dir := t.TempDir()
	c, err := Load(filepath.Join(dir, "missing.conf"))
	if err != nil || !c.Enabled {
		t.Fatalf("missing file: %+v %v", c, err)
	}
	p := filepath.Join(dir, "livefix.conf")
	os.WriteFile(p, []byte("enabled = false\n"), 0o644)
	c, err = Load(p)
	if err != nil || c.Enabled {
		t.Fatalf("%+v %v", c, err)
	}
	if got := OffReason("BOOT_IMAGE=/vmlinuz root=/dev/sda1 livefix=off quiet", Default()); !strings.Contains(got, "livefix=off") {
		t.Errorf("cmdline off: %q", got)
	}
	if got := OffReason("root=/dev/sda1 xlivefix=off", Default()); got != "" {
		t.Errorf("a longer word counted: %q", got)
	}
	if got := OffReason("root=/dev/sda1", c); !strings.Contains(got, p) {
		t.Errorf("config off: %q", got)
	}
}
