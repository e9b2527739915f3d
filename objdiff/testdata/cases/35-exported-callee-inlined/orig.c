/* case: exported (global) function calc_crc changes; gcc 12 also inlines it into the global caller verify_block (same TU), so both are changed although verify_block's source is untouched. */
int calc_crc(const unsigned char *p, int n)
{
	int i, c = 0;

	for (i = 0; i < n; i++)
		c = (c << 1) ^ p[i];
	return c;
}

int verify_block(const unsigned char *p, int n, int want)
{
	return calc_crc(p, n) == want;
}
