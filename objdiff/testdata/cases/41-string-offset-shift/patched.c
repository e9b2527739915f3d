/* case: strings of two functions share one merged string section (.rodata.log_a.str1.1, gcc 12 names it after the first user); log_a gains a new string placed before "common\n", shifting its offset (log_b reloc .rodata.log_a.str1.1+0 -> +N). log_b still prints the same text -> only log_a changed. */
extern int printk(const char *fmt, ...);

void log_a(int x)
{
	printk("start %d\n", x);
	printk("common\n");
	printk("a=%d\n", x);
}

void log_b(void)
{
	printk("common\n");
}
