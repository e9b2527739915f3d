// Package kernelpatch manages kernel live patches on a running host: it
// loads livepatch modules, waits for the kernel's patching transition,
// disables and unloads them, and lists what is applied.
//
// # Interfaces
//
// Everything goes through the kernel's own interfaces, as root:
// finit_module(2) and delete_module(2) for the module, and the livepatch
// sysfs tree (Documentation/ABI/testing/sysfs-kernel-livepatch):
//
//	/sys/kernel/livepatch/NAME/{enabled,transition,force}
//	/sys/kernel/livepatch/NAME/OBJECT/patched
//	/sys/kernel/livepatch/NAME/OBJECT/FUNCTION,SYMPOS/
//	/proc/PID/task/TID/patch_state
//
// # All or nothing
//
// Every operation either completes or puts the system back as it was, and
// its result says which. Load checks the module's metadata (NAME.json
// next to NAME.ko, written by livefix-build kernel) against the running
// kernel (release and the vmlinux GNU build-id from /sys/kernel/notes)
// before touching anything. After finit_module it waits for the patching
// transition; while it waits it reports progress and, when the transition
// is slow, the tasks whose patch_state lags. If the transition does not
// complete in time, Load reverses it (writing 0 to enabled, which the
// kernel turns into a reverse transition), waits for the reverse
// transition, and removes the module: the kernel runs the original code
// again. Disable reverses its own transition on timeout in the same way,
// leaving the patch enabled. Outcome values in the results name the final
// state.
//
// A patch built with replace (every livefix cumulative level) atomically
// replaces the patches enabled before it; Load reports them and removes
// their now inert modules.
//
// # Levels
//
// Load records the metadata of each patch it applies under StateDir
// (/run/livefix/kernel), which is how List and Version know a patch's
// cumulative level. Version gives the effective kernel version: the
// release followed by "+livefixN" for the highest enabled level, like
// KernelCare's kcarectl --uname.
package kernelpatch
