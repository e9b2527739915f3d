/* SPDX-License-Identifier: GPL-2.0 */
/*
 * livefix.h: livefix's own macros for patch authors, on top of the
 * kpatch-compatible ones (kpatch-macros.h, included here). livefix-build
 * puts this file in the kernel tree's include/ while it compiles a patched
 * file, so that #include "livefix.h" finds it.
 *
 * System states (the kernel's struct klp_state, see
 * Documentation/livepatch/system-state.rst). A cumulative level that
 * changes the state of the system (a setting its callbacks make, data its
 * new code keeps in shadow variables) declares it with an id and a
 * version; the generated module lists every declared state in its
 * klp_patch, and the kernel refuses a replacing level that does not
 * declare each state of the levels it replaces with at least their
 * version. Callbacks find their own state with
 * klp_get_state(livefix_klp_patch(), id) and the replaced level's with
 * klp_get_prev_state(id).
 *
 *   LIVEFIX_STATE(id, version)
 *	this level supports state id at version (id: non-zero constant).
 *
 *   LIVEFIX_SHADOW_STATE(id, version)
 *	the same, for a state that is the shadow variables with shadow id
 *	id, which the new code attaches: when this level is disabled, the
 *	generated post_unpatch callback frees them all with klp_shadow_free_all(id, NULL), after the
 *	author's own post_unpatch. A level replacing this one must declare
 *	the state too (LIVEFIX_SHADOW_STATE to keep using the variables,
 *	LIVEFIX_SHADOW_RETIRE to drop them), or the kernel refuses it.
 *
 *   LIVEFIX_SHADOW_RETIRE(id, version)
 *	this level no longer uses shadow id id: when it replaces a level
 *	that declared the state, its generated post_patch callback frees
 *	the variables that level left (once every task runs this level's
 *	code), after the author's own post_patch.
 *
 * When a replace fails and the kernel reverts to the replaced level, the
 * generated post_unpatch sees that level's state (klp_get_prev_state) and
 * frees nothing: the variables are still in use. The callbacks belong to
 * the patch's vmlinux object (one without functions is added when the
 * patch changes only modules): they run at the level's enable, disable
 * and replace transitions, never when a module comes or goes.
 * Written for livefix from the kernel's documented behaviour.
 */
#ifndef LIVEFIX_H
#define LIVEFIX_H

#include "kpatch-macros.h"

/* What a state marker records; livefix-build reads and removes it. */
struct livefix_state_mark {
	unsigned long id;
	unsigned int version;
	unsigned int kind; /* 0 state, 1 shadow state, 2 retired shadow state */
};

#define __LIVEFIX_STATE(_id, _version, _kind)					\
	_Static_assert((unsigned long)(_id) != 0, "a klp_state id must not be 0"); \
	static struct livefix_state_mark __UNIQUE_ID(__livefix_state_)		\
		__used __section(".livefix.states") __aligned(8) = {		\
		.id = (_id), .version = (_version), .kind = (_kind) }

#define LIVEFIX_STATE(id, version)		__LIVEFIX_STATE(id, version, 0)
#define LIVEFIX_SHADOW_STATE(id, version)	__LIVEFIX_STATE(id, version, 1)
#define LIVEFIX_SHADOW_RETIRE(id, version)	__LIVEFIX_STATE(id, version, 2)

/* livefix_klp_patch returns this module's klp_patch, for klp_get_state. */
struct klp_patch *livefix_klp_patch(void);

#endif /* LIVEFIX_H */
