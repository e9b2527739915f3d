// Package klp turns the diff engine's results into a kernel livepatch
// module: a .ko that registers one klp_patch with the kernel's livepatch
// core, plus a JSON manifest describing it.
//
// Build takes, per patched kernel object (vmlinux or a loadable module),
// the objdiff results of the translation units a patch changed, and:
//
//  1. renames each unit's included symbols so that units cannot clash:
//     replaced functions become global livefix_uN_NAME symbols the
//     generated hook can point klp_func.new_func at, and references to
//     target symbols that a module cannot link against normally (static
//     or unexported ones) become undefined .klp.sym.OBJ.NAME,POS symbols,
//     with POS resolved against the target's symbol table in kallsyms
//     order (see Symbols);
//  2. generates a C hook registering the patch (replace = true, so a
//     higher cumulative level atomically replaces the lower) that first
//     checks the running kernel's GNU build-id in /sys/kernel/notes and
//     refuses to load on any other kernel;
//  3. builds the module with kbuild against the kernel headers, the
//     units linked in as prebuilt (_shipped) objects, and modpost told to
//     only warn about the .klp.sym symbols it cannot resolve;
//  4. rewrites the .ko as Documentation/livepatch/module-elf-format.rst
//     describes: every relocation against a .klp.sym symbol moves into a
//     .klp.rela.OBJ.SECTION section flagged SHF_RELA_LIVEPATCH (and
//     SHF_ALLOC, so that the 6.1 livepatch core can still read it when a
//     patched module loads later) and the symbols get SHN_LIVEPATCH.
//
// FromPatches runs the whole pipeline from source patches: it prepares the
// cached kernel tree (internal/kbuild), compiles the touched files before
// and after, diffs them, decides which object each file belongs to
// (ObjectOf) and calls Build. cmd/livefix-build's kernel command is a thin
// wrapper around it.
package klp
