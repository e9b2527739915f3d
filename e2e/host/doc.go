// Package host holds livefix's end-to-end acceptance tests for the host
// side (issue 7): persistent state on a disk that survives power cuts,
// `livefix boot` and its crash-loop guard, the off switches, status,
// info and uname, refusals, the lock, reconcile after kill -9, and
// kexec. Live patches are built with `livefix-build kernel` from the
// patches in testdata against the packaged Debian kernel and run in
// qemu (internal/kernelvm) with a raw ext4 image as /var/lib/livefix.
//
// The package has no non-test code besides this comment. Randomized
// trials take their count from LIVEFIX_HOST_TRIALS (default 20, the
// issue's count; LIVEFIX_HOST_KILL9_TRIALS and LIVEFIX_HOST_BOOT_TRIALS
// set acceptance 4's and 3's separately) and their seed from
// LIVEFIX_HOST_SEED (default: the time, logged so that a failure can be
// replayed).
package host
