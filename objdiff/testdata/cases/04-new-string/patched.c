/* case: a function gains a call with a new string literal; the string is not listed anywhere, the function is changed. */
extern int printk(const char *fmt, ...);

int do_work(int x)
{
	printk("working %d\n", x);
	if (x > 100)
		printk("big value %d\n", x);
	return x + 1;
}

int untouched(int x)
{
	printk("untouched %d\n", x);
	return x;
}
