/* case: the global function legacy_fixup is deleted and apply no longer calls it -> apply changed; removed functions are not listed anywhere. */
extern int printk(const char *fmt, ...);

int __attribute__((noinline)) legacy_fixup(int v)
{
	printk("legacy %d\n", v);
	return v ^ 0x55;
}

int apply(int v)
{
	return legacy_fixup(v) + 1;
}
