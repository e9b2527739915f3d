/* case: the call target changes from baz to bar (both extern, same signature); the code bytes are identical, only the R_X86_64_PLT32 symbol differs -> dispatch changed. */
extern int bar(int);
extern int baz(int);

int dispatch(int x)
{
	return bar(x + 1) * 2;
}

int keep(int x)
{
	return bar(x);
}
