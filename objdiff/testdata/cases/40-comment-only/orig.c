/* case: only comments and whitespace change (same line count, no __LINE__/__FILE__ users) -> objects identical apart from the file symbol -> no_functional_change, exit 4. */
extern int printk(const char *fmt, ...);

/* compute a thing */
int compute(int a, int b)
{
	int r = a * b;	/* multiply */

	printk("r=%d\n", r);
	return r + 1;
}
