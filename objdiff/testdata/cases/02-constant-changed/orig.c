/* case: a global function whose return constant changes (42 -> 43); only it changes. */
int get_magic(void)
{
	return 42;
}

int get_other(int x)
{
	return x + 7;
}
