// Package build makes userspace live patches (.lfp files, see package
// ulp) from a source tree, its build command and a source patch, for a
// given production binary.
//
// Build copies the tree twice (without its built files), applies the
// patch to the second copy and runs the project's own build command in
// each copy with a compiler wrapper first in PATH and in CC/CXX. The
// wrapper (a shell script written by Build) records every compiler
// invocation and runs the real compiler with the same arguments plus
// -ffile-prefix-map (which changes no code), so the build is the
// project's ordinary one, whatever its shape. Each source file the build
// compiled is then compiled again on its own with that invocation's
// compile options plus -c -ffunction-sections -fdata-sections -fno-lto
// (replay, see wrap.go). Objects whose bytes differ between the trees are
// diffed with objdiff; for each changed source, the compiled variant whose
// functions are in the target binary becomes a unit of the patch, after
// ulp.TargetFile.Bind has checked every function it replaces or calls
// against the binary's own bytes and recorded where the target's symbols
// are. The patch is keyed to the target binary's GNU build-id.
package build
