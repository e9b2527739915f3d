package patchrepo

import (
	"encoding/json"
	"testing"
)

func FuzzDecodeCustom(f *testing.F) {
	f.Add([]byte(`{"kind":"kernel","build_id":"ab12","level":2,"name":"lf_x","channel":"stable","published":"2026-01-01T00:00:00Z","stable_since":"2026-01-02T00:00:00Z","cves":["CVE-2024-1086"]}`))
	f.Add([]byte(`{"kind":"user","build_id":"00","level":1,"name":"l","channel":"test","published":"2026-01-01T00:00:00Z","revoked":{"time":"2026-01-01T00:00:00Z","reason":"x"}}`))
	f.Add([]byte(`{"kind":"kernel","level":-1}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := DecodeCustom(b)
		if err != nil {
			return
		}
		// What decodes is valid and survives a round trip.
		out, err := json.Marshal(c)
		if err != nil {
			t.Fatal(err)
		}
		c2, err := DecodeCustom(out)
		if err != nil {
			t.Fatalf("re-decode of %s: %v", out, err)
		}
		if c2.Kind != c.Kind || c2.BuildID != c.BuildID || c2.Level != c.Level || c2.Channel != c.Channel {
			t.Fatalf("round trip %+v -> %+v", c, c2)
		}
		_ = c.Eligible(ChannelStable, 0, c.Published)
	})
}

func FuzzParseTargetPath(f *testing.F) {
	f.Add("kernel/ab12/3/lf_x.ko")
	f.Add("user/00ff/1/lib.lfp")
	f.Add("kernel/../1/x")
	f.Fuzz(func(t *testing.T, p string) {
		kind, bid, level, file, err := ParseTargetPath(p)
		if err != nil {
			return
		}
		if got := TargetPath(kind, bid, level, file); got != p {
			t.Fatalf("%q parsed and rebuilt as %q", p, got)
		}
	})
}
