/* case: exported function calc_sum (noinline) changes; the global caller verify_sum still calls the same global symbol with the same bytes -> only calc_sum changed. */
int __attribute__((noinline)) calc_sum(const unsigned char *p, int n)
{
	int i, c = 0;

	for (i = 0; i < n; i++)
		c += p[i];
	return c;
}

int verify_sum(const unsigned char *p, int n, int want)
{
	return calc_sum(p, n) == want;
}
