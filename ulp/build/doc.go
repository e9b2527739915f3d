// Package build makes userspace live patches (.lfp files, see package
// ulp) from a source tree, its build command and a source patch.
//
// Build copies the tree twice, applies the patch to the second copy and
// runs the project's own build command in each copy with a compiler
// wrapper first in PATH and in CC. The wrapper (a shell script written by
// Build) adds -ffunction-sections -fdata-sections, turns off LTO, maps the
// copy's path back to the source tree's (-ffile-prefix-map, so that
// __FILE__ and debug info do not differ between the copies and a build in
// the source tree itself reproduces the same target), and records every
// object it compiles. Objects whose bytes differ between the two builds
// are diffed with objdiff; the units whose changed functions belong to the
// target become the patch, keyed by the GNU build-id of the target as
// built from the unpatched copy.
package build
