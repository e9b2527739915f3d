// Package hoststate keeps livefix's persistent record of what is applied
// to a host, under a state directory (default /var/lib/livefix, flag
// --state-dir, environment LIVEFIX_STATE_DIR), and the lock that
// serialises every command that changes the kernel or that record.
//
// # Layout
//
//	STATE/lock                            flock(2) lock; holds the holder's pid
//	STATE/kernel/BUILDID/state.json       the one state file of a vmlinux build-id
//	STATE/kernel/BUILDID/objects/SHA.ko   content-addressed copy of a module
//	STATE/kernel/BUILDID/objects/SHA.json content-addressed copy of its metadata
//
// BUILDID is the running vmlinux's GNU build-id (hex), so a record never
// applies to another kernel, even one with the same release string.
//
// # Atomicity
//
// Every file is written by WriteFile: a temporary file in the same
// directory, fsync, rename over the target, fsync of the directory. A
// power cut at any instant leaves the old or the new content, never a
// torn one. Objects are written before the state file that names them
// and removed only after a state file that no longer names them is
// durable, so the state file never names a missing object.
package hoststate
