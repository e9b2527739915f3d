// Package kernel holds livefix's end-to-end acceptance tests for kernel
// live patches (issue 3). Each case is a source patch for the packaged
// Debian kernel under testdata/patches. The tests build it with the
// project's builder, boot the packaged kernel in qemu (internal/kernelvm),
// check the behaviour before, load the live patch with `livefix kernel
// load`, check the behaviour after, disable it, check that the original
// behaviour is back, and unload the module.
//
// The package has no non-test code besides this comment: the cases and
// the guest scripts live in the _test.go files. Tests that need the
// kernel packages or qemu use internal/kerneltest, so they skip on a
// machine without them and fail under LIVEFIX_REQUIRE_VM=1.
package kernel
