package patchrepo

import (
	"strings"

	"golang.org/x/mod/semver"
)

func canonVersion(v string) string {
	if !strings.HasPrefix(v, "v") {
		v = "v" + v
	}
	return semver.Canonical(v)
}

func validVersion(v string) bool { return canonVersion(v) != "" }

// AgentSatisfies reports whether an agent of version agent may apply a
// patch that needs at least min. A development build ("dev" or anything
// that is not a version) satisfies every minimum.
func AgentSatisfies(agent, min string) bool {
	if min == "" {
		return true
	}
	a, m := canonVersion(agent), canonVersion(min)
	if a == "" {
		return true
	}
	if m == "" {
		return false
	}
	return semver.Compare(a, m) >= 0
}
