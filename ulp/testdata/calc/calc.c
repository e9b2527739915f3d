/* Functions live patched by the ulp tests. Compiled twice: into the
 * executable (SIDE=app) and into libcalc.so (SIDE=lib). */
#include <stdio.h>
#include <stdlib.h>
#include "calc.h"

static int base = 100;
static long calls;
static __thread int tls_value;

static inline int scale(int x)
{
	return x * 2;
}

int NAME(answer)(int x)
{
	calls++;
	return x + 1;
}

int NAME(scaled)(int x)
{
	return scale(x) + base;
}

void NAME(setbase)(int b)
{
	base = b;
}

void NAME(settls)(int v)
{
	tls_value = v;
}

int NAME(gettls)(void)
{
	return tls_value;
}

long NAME(ncalls)(void)
{
	return calls;
}
