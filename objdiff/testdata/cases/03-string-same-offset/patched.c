/* case: string literal text changes at the same .rodata.str1.1 offset ("abc" -> "abd"); bytes and relocs are identical, only the referenced string content differs. */
extern int printk(const char *fmt, ...);

void say(void)
{
	printk("abd\n");
}

void other(void)
{
	printk("xyz\n");
}
