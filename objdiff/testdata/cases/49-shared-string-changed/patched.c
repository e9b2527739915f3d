/* case: one string literal used by two functions (merged once into .rodata.warn_a.str1.1, warn_b references it cross-section) changes text "timeout\n" -> "timed out\n"; both users' referenced content changes -> warn_a and warn_b changed, quiet unchanged. */
extern int printk(const char *fmt, ...);

void warn_a(void)
{
	printk("timed out\n");
}

void warn_b(int x)
{
	if (x)
		printk("timed out\n");
}

void quiet(void)
{
	printk("ok\n");
}
