/* libauth: the password policy of authd (a live patching test library).
 * It has what real libraries have: static data, a static helper, a
 * hidden (library-internal) function and exported entry points. */
#include <string.h>
#include "auth.h"

static int attempts;

/* Not inlined: the patch calls it, and livefix must find and check it. */
__attribute__((noinline)) static int weight(const char *pw)
{
	int w = 0;
	for (; *pw; pw++)
		w += (*pw >= '0' && *pw <= '9') ? 2 : 1;
	return w;
}

__attribute__((visibility("hidden"), noinline)) int auth_min_weight(void)
{
	return 6;
}

int auth_check(const char *user, const char *pw)
{
	__atomic_add_fetch(&attempts, 1, __ATOMIC_RELAXED);
	(void)user;
	return weight(pw) >= auth_min_weight();
}

int auth_attempts(void)
{
	return __atomic_load_n(&attempts, __ATOMIC_RELAXED);
}
