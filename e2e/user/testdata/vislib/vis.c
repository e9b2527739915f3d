/* libvis: a library whose internal symbols are global in the source and
 * made local by a version script (vis.map), built with -fPIC -fno-plt as
 * distribution libraries often are: every access to them goes through
 * the GOT in the object, and the linker relaxes those instructions in
 * the library (mov -> lea, call * -> addr32 call, jmp * -> jmp; nop). */
#include "vis.h"

const char *const vis_names[3] = {"zero", "one", "two"};
int vis_calls;

int vis_helper(int i)
{
	return i * 2;
}

const char *vis_name(int i)
{
	vis_calls++;
	return vis_names[(unsigned)vis_helper(i) / 2 % 3];
}

int vis_tail(int i)
{
	return vis_helper(i + 1);
}

int vis_count(void)
{
	return vis_calls;
}
