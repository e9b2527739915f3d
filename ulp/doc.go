// Package ulp live patches running processes and the shared libraries
// they map (userspace live patching, the LibCare/upatch class).
//
// # Patch files
//
// A patch file (.lfp) carries, for one target ELF object (an executable
// or a shared library identified by its GNU build-id), one Unit per
// changed translation unit: the relocatable object that objdiff extracted
// (changed and new functions, new data, literals), the functions whose
// running copies it replaces and the symbols it leaves for the target to
// provide. Encode and Decode read and write the versioned, checksummed
// container (see format.go for the layout); any truncation or change of a
// byte is reported as ErrCorrupt.
//
// # Applying
//
// Apply patches one process:
//
//  1. find the target object in the process by build-id, with its load
//     bias, and read its symbol tables (symtab, else dynsym);
//  2. resolve every symbol the patch needs: its own definitions, statics
//     of the target (by source file, as the compiler's STT_FILE symbol
//     groups them), globals of the target, and globals of the other
//     loaded objects through their dynamic symbol tables, the executable
//     first, as the dynamic linker's global scope orders them;
//  3. stop every thread (internal/proc) just long enough to map memory
//     within rel32 reach of the target by running mmap inside the
//     process (and mprotect for writable data), then let it run;
//  4. with the process running, lay out text (with a jump stub per far
//     function), read-only data with GOT-style slots (both mapped r-x)
//     and writable data (rw-), apply the relocations for that address
//     and write the image: nothing can reach the new code yet;
//  5. stop every thread again and check that no thread's instruction
//     pointer and no return address of its frames (unwound with the
//     objects' .eh_frame, through signal frames and sigaltstacks; a
//     conservative scan where unwinding stops) lies in a function about
//     to be replaced, its .cold part, or code about to be unmapped; if one
//     does, let the process run briefly and try again, up to a timeout;
//     once it passes, write a 5-byte jmp at each replaced function's
//     entry (after its endbr64 if it has one, so indirect calls still
//     land on an endbr64 under CET) and let the process go.
//
// Each stop is a single request to the tracer thread (proc.Run), so no
// stop waits for hand-offs between threads. Result.Pause is the longest
// single stop (what the target's threads experience), Result.Stopped the
// sum over all stops.
//
// Every step that changed the process is undone, in reverse order, when a
// later step fails, before the process is released: if the check never
// passes or a step fails, the jumps written so far are restored and the
// mapped memory is unmapped (in the stop at hand, or in a cleanup stop),
// so the process is exactly as it was.
//
// A newer patch (higher level) for the same build-id replaces the applied
// one in the commit stop (step 5); the old patch's code pages are unmapped
// in one more stop. Unpatch restores the saved entry bytes in one stop
// (after the same check) and unmaps the patch's code pages in a later one;
// its data and literals, which the program may still point to, stay
// (Record.Kept). What was written is recorded in a state directory
// (/run/livefix by default), one file per process, keyed by pid and
// process start time so that a reused pid is never mistaken for a
// patched process; records are written ahead of each commit and every
// command reconciles them with the process's memory (reconcile.go: exec,
// fork, a killed livefix). Watch applies patches to processes as they
// start or map a target.
//
// The patch builder (package build) checks a patch against the production
// binary with TargetFile.Bind and records where the target's symbols are,
// so Apply needs no symbol table of a stripped target.
package ulp
