// Package realfix is livefix's end-to-end test on real Linux 6.1 stable
// fixes (issue 11). The fixes are the differences between Debian's
// packaged linux-source-6.1 trees: 6.1.190-1 and 6.1.192-1 are fetched by
// scripts/setup.sh into the cache, the packaged 6.1.192-3 is the running
// kernel's source. Each fix is reversed onto the packaged tree (the old
// file is a --base-patch applied to both sides), built with livefix-build
// kernel, and every built module is loaded, transitioned, disabled and
// unloaded in one boot of the packaged kernel. The outcomes are compared
// with testdata/outcomes.golden.
//
// testdata/corpus.json is the selection of fixes, made by a written,
// mechanical rule that never looks at livefix's outcome (see rule in
// corpus_test.go); `go test -run TestCorpus -update` regenerates it.
// No kernel text is committed: only paths and sha256 digests.
//
// The package has no non-test code besides this comment.
package realfix
