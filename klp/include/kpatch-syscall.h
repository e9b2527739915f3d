/* SPDX-License-Identifier: GPL-2.0 */
/*
 * livefix's kpatch-syscall.h: KPATCH_SYSCALL_DEFINE0..6 for patches
 * written for kpatch-build. Under kpatch they exist because a system
 * call's body (__do_sys_NAME) is an inline function without an ftrace
 * entry that cannot be patched itself; livefix's diff engine patches the
 * callers of such functions instead, so the macros are the kernel's
 * SYSCALL_DEFINEn. Written for livefix from the documented behaviour.
 */
#ifndef LIVEFIX_KPATCH_SYSCALL_H
#define LIVEFIX_KPATCH_SYSCALL_H

#include <linux/syscalls.h>
#include "kpatch-macros.h"

#define KPATCH_SYSCALL_DEFINE0(name)		SYSCALL_DEFINE0(name)
#define KPATCH_SYSCALL_DEFINE1(name, ...)	SYSCALL_DEFINE1(name, __VA_ARGS__)
#define KPATCH_SYSCALL_DEFINE2(name, ...)	SYSCALL_DEFINE2(name, __VA_ARGS__)
#define KPATCH_SYSCALL_DEFINE3(name, ...)	SYSCALL_DEFINE3(name, __VA_ARGS__)
#define KPATCH_SYSCALL_DEFINE4(name, ...)	SYSCALL_DEFINE4(name, __VA_ARGS__)
#define KPATCH_SYSCALL_DEFINE5(name, ...)	SYSCALL_DEFINE5(name, __VA_ARGS__)
#define KPATCH_SYSCALL_DEFINE6(name, ...)	SYSCALL_DEFINE6(name, __VA_ARGS__)

#endif /* LIVEFIX_KPATCH_SYSCALL_H */
