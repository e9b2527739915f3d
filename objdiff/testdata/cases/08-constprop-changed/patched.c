/* case: a static noinline function always called with the same constant argument becomes helper.constprop.0; its body changes -> only the clone changed. */
extern int printk(const char *fmt, ...);
extern int table_lookup(int key, int mode);

static int __attribute__((noinline)) lookup(int key, int mode)
{
	int r = table_lookup(key, mode);

	if (mode == 2)
		printk("mode two %d\n", r);
	return r + 20;
}

int find_a(int k)
{
	return lookup(k, 2);
}

int find_b(int k)
{
	return lookup(k + 1, 2) * 2;
}
