/* case: identical source -> identical objects; no_functional_change, exit 4. */
extern int printk(const char *fmt, ...);

int counter;

static int __attribute__((noinline)) helper(int x)
{
	return x * 3 + counter;
}

int entry(int x)
{
	printk("entry %d\n", x);
	return helper(x) + helper(x + 1);
}
