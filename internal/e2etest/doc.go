// Package e2etest is the scaffolding the end-to-end tests (e2e/...) share:
// the programs under test built as they ship, and the reading of what a
// guest script reports.
//
// Build compiles livefix, livefix-build, livefix-server (or any package of
// the module) once per test binary, static and with -trimpath like the
// Debian packages, into a directory that Main removes when the tests end;
// a package using Build runs its tests through Main:
//
//	func TestMain(m *testing.M) { os.Exit(e2etest.Main(m)) }
//
// Guest scripts (internal/kernelvm) print one line per check, "PASS name"
// or "FAIL name detail"; CheckGuest requires every expected check to have
// passed exactly once, none to have failed and no unexpected one to have
// run, so that a check that silently did not run fails the test.
// GuestLog copies a guest's console into the test log in -v mode.
package e2etest
