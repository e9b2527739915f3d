/* case: an out-of-line (noinline) static callee changes; only it is changed, its callers still call the same symbol. */
extern int printk(const char *fmt, ...);

static int __attribute__((noinline)) compute(int x, int y)
{
	printk("compute %d %d\n", x, y);
	return x * y + 11;
}

int caller_a(int x)
{
	return compute(x, 3) + 1;
}

int caller_b(int x, int y)
{
	return compute(y, x) - 1;
}
