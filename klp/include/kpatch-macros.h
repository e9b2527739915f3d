/* SPDX-License-Identifier: GPL-2.0 */
/*
 * livefix's kpatch-macros.h: the macro names patches written for
 * kpatch-build use, with livefix's meaning. livefix-build puts this file
 * in the kernel tree's include/ while it compiles a patched file, so that
 * #include "kpatch-macros.h" finds it. Written for livefix from the
 * documented behaviour of the macros.
 *
 * Callbacks run per patched object (vmlinux, or the module of the file
 * that declares them), as klp_object callbacks:
 *   KPATCH_PRE_PATCH_CALLBACK(fn)    int fn(patch_object *obj): before the
 *                                    object is patched; an error refuses it
 *   KPATCH_POST_PATCH_CALLBACK(fn)   void fn(patch_object *obj): after
 *   KPATCH_PRE_UNPATCH_CALLBACK(fn)  void fn(patch_object *obj): before
 *                                    the patch is disabled
 *   KPATCH_POST_UNPATCH_CALLBACK(fn) void fn(patch_object *obj): after
 * KPATCH_IGNORE_FUNCTION(fn) keeps a changed function out of the live
 * patch (the running copy stays).
 * KPATCH_IGNORE_SECTION(".sec") makes the diff engine ignore changes in
 * that section of this file (.text.foo, .data.bar): the running copy
 * stays and nothing is patched on its account.
 * KPATCH_FORCE_UNSAFE(fn) states that the old and new copies of fn may run
 * at the same time: the engine then includes fn where it would refuse it
 * only because the old copy stays reachable (no ftrace entry and global,
 * or its address stored or taken; an entry in a section the engine does
 * not know). livefix-build prints a warning for each such override. It
 * does not bypass the kernel's consistency model: the transition still
 * waits until no task sleeps in a replaced function.
 * livefix.h adds livefix's own macros (system states, shadow variables).
 */
#ifndef LIVEFIX_KPATCH_MACROS_H
#define LIVEFIX_KPATCH_MACROS_H

#include <linux/compiler.h>
#include <linux/livepatch.h>

typedef struct klp_object patch_object;

typedef int (*livefix_pre_patch_t)(patch_object *obj);
typedef void (*livefix_post_patch_t)(patch_object *obj);
typedef void (*livefix_pre_unpatch_t)(patch_object *obj);
typedef void (*livefix_post_unpatch_t)(patch_object *obj);

/*
 * Each macro leaves a pointer in a .livefix.* section; livefix-build reads
 * and removes these sections, so nothing of them reaches the module but
 * what they ask for. The typed pointer makes a wrong signature a compile
 * error.
 */
#define __LIVEFIX_MARK(sec, type, name, val) \
	static type name __used __section(sec) = val

#define KPATCH_PRE_PATCH_CALLBACK(_fn) \
	__LIVEFIX_MARK(".livefix.callbacks.pre_patch", livefix_pre_patch_t, __livefix_pre_patch_##_fn, _fn)
#define KPATCH_POST_PATCH_CALLBACK(_fn) \
	__LIVEFIX_MARK(".livefix.callbacks.post_patch", livefix_post_patch_t, __livefix_post_patch_##_fn, _fn)
#define KPATCH_PRE_UNPATCH_CALLBACK(_fn) \
	__LIVEFIX_MARK(".livefix.callbacks.pre_unpatch", livefix_pre_unpatch_t, __livefix_pre_unpatch_##_fn, _fn)
#define KPATCH_POST_UNPATCH_CALLBACK(_fn) \
	__LIVEFIX_MARK(".livefix.callbacks.post_unpatch", livefix_post_unpatch_t, __livefix_post_unpatch_##_fn, _fn)

#define KPATCH_IGNORE_FUNCTION(_fn) \
	__LIVEFIX_MARK(".livefix.ignore.functions", void *, __livefix_ignore_##_fn, (void *)_fn)
#define KPATCH_IGNORE_SECTION(_sec) \
	__LIVEFIX_MARK(".livefix.ignore.sections", const char *, __UNIQUE_ID(__livefix_ignore_section_), _sec)
#define KPATCH_FORCE_UNSAFE(_fn) \
	__LIVEFIX_MARK(".livefix.force_unsafe", void *, __livefix_force_##_fn, (void *)_fn)

/* livefix's own names for the same. */
#define LIVEFIX_PRE_PATCH_CALLBACK(fn)		KPATCH_PRE_PATCH_CALLBACK(fn)
#define LIVEFIX_POST_PATCH_CALLBACK(fn)		KPATCH_POST_PATCH_CALLBACK(fn)
#define LIVEFIX_PRE_UNPATCH_CALLBACK(fn)	KPATCH_PRE_UNPATCH_CALLBACK(fn)
#define LIVEFIX_POST_UNPATCH_CALLBACK(fn)	KPATCH_POST_UNPATCH_CALLBACK(fn)
#define LIVEFIX_IGNORE_FUNCTION(fn)		KPATCH_IGNORE_FUNCTION(fn)

/* kpatch_printk: printk with the patch's prefix. */
#define kpatch_printk(fmt, ...) pr_info("livefix: " fmt, ##__VA_ARGS__)

#endif /* LIVEFIX_KPATCH_MACROS_H */
