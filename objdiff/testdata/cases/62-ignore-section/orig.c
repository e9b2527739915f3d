/* case: KPATCH_IGNORE_SECTION: the patch changes the initial value of writable limit to 0, which moves it from .data.limit to .bss.limit (refused on its own) and helper, and ignores .data.limit and .text.helper -> changed get_limit only, limit and helper ignored, the marker and its string are new data; exit 0. */
#define noinline __attribute__((noinline))
int limit = 1;

noinline int helper(int x)
{
	return x * 3;
}

int get_limit(int x)
{
	return limit + helper(x) + 1;
}
