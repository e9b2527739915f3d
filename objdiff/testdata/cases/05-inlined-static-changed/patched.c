/* case: a small static function inlined into two callers changes; both callers changed, the callee has no symbol. */
extern int printk(const char *fmt, ...);

static int scale(int x)
{
	return x * 6;
}

int caller_a(int x)
{
	return scale(x) + 1;
}

int caller_b(int x)
{
	printk("b %d\n", x);
	return scale(x + 2);
}

int bystander(int x)
{
	return x - 1;
}
