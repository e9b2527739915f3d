package kbuild

import (
	"encoding/binary"
	"errors"
	"strings"
	"testing"
)

func TestImageVersion(t *testing.T) {
	head := make([]byte, 0x400)
	copy(head[0x202:], "HdrS")
	binary.LittleEndian.PutUint16(head[0x20e:], 0x100)
	copy(head[0x300:], "6.1.0-57-amd64 (debian-kernel@lists.debian.org) #1 SMP PREEMPT_DYNAMIC Debian 6.1.192-3 (2026-11-20)\x00")
	if v, err := imageVersion(head, "img"); err != nil || v != "6.1.192-3" {
		t.Errorf("imageVersion = %q, %v; want 6.1.192-3", v, err)
	}
	copy(head[0x300:], "6.1.0 (me@example) #1 SMP\x00")
	if _, err := imageVersion(head, "img"); err == nil || !strings.Contains(err.Error(), "no Debian package version") {
		t.Errorf("a non-Debian kernel: err = %v", err)
	}
	if _, err := imageVersion(make([]byte, 0x400), "img"); err == nil {
		t.Error("accepted an image without a setup header")
	}
}

func TestCheckConfig(t *testing.T) {
	target := []byte("CONFIG_A=y\nCONFIG_B=m\n# CONFIG_C is not set\nCONFIG_S=\"x\"\nCONFIG_SYSTEM_TRUSTED_KEYS=\"debian/certs/x.pem\"\n")
	tests := []struct {
		name string
		tree string
		want []string // substrings of the error; none: no error
	}{
		{"same, local keys and tool text", "CONFIG_A=y\nCONFIG_B=m\nCONFIG_S=\"x\"\nCONFIG_SYSTEM_TRUSTED_KEYS=\"\"\nCONFIG_CC_VERSION_TEXT=\"gcc\"\nCONFIG_BUILD_SALT=\"\"\n", nil},
		{"changed", "CONFIG_A=y\nCONFIG_B=y\nCONFIG_S=\"x\"\n", []string{"CONFIG_B=m became y"}},
		{"dropped and added", "CONFIG_A=y\nCONFIG_S=\"x\"\nCONFIG_C=y\n", []string{"CONFIG_B=m dropped", "CONFIG_C=y added"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := CheckConfig(target, []byte(tc.tree))
			if len(tc.want) == 0 {
				if err != nil {
					t.Errorf("err = %v, want none", err)
				}
				return
			}
			var me *MismatchError
			if !errors.As(err, &me) || !errors.Is(err, ErrTreeMismatch) || me.What != "config" {
				t.Fatalf("err = %v, want a config *MismatchError", err)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("err = %v, want it to say %q", err, w)
				}
			}
		})
	}
}
