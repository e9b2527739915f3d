package hoststate

import "testing"

// FuzzParseState: a state file of any content is refused or parsed,
// never a panic.
func FuzzParseState(f *testing.F) {
	f.Add([]byte(`{"format":1,"build_id":"` + id + `","applied":{"name":"lf_a","level":2,"module_sha256":"00"},"boot":{"in_progress":{"name":"lf_a","level":2,"at":"2026-01-01T00:00:00Z"}}}`))
	f.Add([]byte(`{"format":1,"build_id":"` + id + `","pending":{"op":"load","target":{"name":"x","level":1,"module_sha256":"00"},"pid":1,"started":"2026-01-01T00:00:00Z"}}`))
	f.Add([]byte(`{"format":1`))
	f.Fuzz(func(t *testing.T, b []byte) {
		st, err := parseState("state.json", id, b)
		if err == nil && (st.BuildID != id || st.Format != Format) {
			t.Fatalf("accepted %+v", st)
		}
	})
}
