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
// binaries running in parallel, so all work on it happens under an
// exclusive flock, and a patch applied to it is always reverted: the
// pristine copies of the touched files are saved and recorded in a marker
// before the patch is applied, and a later Prepare or BuildPair restores
// them if a crash left the marker behind.
package kbuild
