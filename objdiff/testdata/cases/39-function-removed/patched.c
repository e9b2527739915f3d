/* case: the global function legacy_fixup is deleted and apply no longer calls it -> apply changed; removed functions are not listed anywhere. */
extern int printk(const char *fmt, ...);

int apply(int v)
{
	return v + 1;
}
