/* case: KPATCH_IGNORE_SECTION: the patch changes the initial value of writable limit to 0, which moves it from .data.limit to .bss.limit (refused on its own) and helper, and ignores .data.limit and .text.helper -> changed get_limit only, limit and helper ignored, the marker and its string are new data; exit 0. */
#define noinline __attribute__((noinline))
#define IGNORE_SECTION(n, s) static const char *n __attribute__((used, section(".livefix.ignore.sections"))) = s
int limit = 0;

noinline int helper(int x)
{
	return x * 5;
}

int get_limit(int x)
{
	return limit + helper(x) + 2;
}
IGNORE_SECTION(ign_limit, ".data.limit");
IGNORE_SECTION(ign_helper, ".text.helper");
