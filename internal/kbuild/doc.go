// Package kbuild manages livefix's cached copies of the packaged kernel's
// source tree and compiles single objects in them.
//
// A live patch for a running kernel is made from objects compiled exactly
// as the distribution compiled that kernel: the same source, the same
// .config, the same compiler. Prepare turns the Debian linux-source tarball
// and /boot/config-RELEASE into a prepared kbuild tree once, under
// CacheDir()/kernel/RELEASE-CONFIGHASH, and reuses it afterwards.
// (*Tree).BuildPair then compiles the translation units a patch touches
// twice, before and after applying it, with -ffunction-sections and
// -fdata-sections so that the diff engine can compare function by function.
//
// The cached tree is shared by every caller on the machine, including test
// binaries running in parallel, and is never patched under them: each
// BuildPair works in a private overlayfs view of it (view.go), mounted in
// a private mount namespace of each command it runs, so separate builds
// compile at once and only short steps (Prepare, repairs, cache updates)
// take the tree's exclusive flock. Where overlayfs cannot be mounted a
// build falls back to patching the tree in place under the lock for its
// whole length; a patch applied that way is always reverted: the pristine
// copies of the touched files are saved and recorded in a marker before
// the patch is applied, and a later Prepare or BuildPair restores them if
// a crash left the marker behind.
package kbuild
