/* case: with cflags -fpic -fno-semantic-interposition gcc 12 emits walk.localalias, a LOCAL FUNC alias at the same address and section as global walk (gcc turned the recursion into a loop; start() calls through the alias, which gas emits as R_X86_64_PC32 .text.walk-4; the string is referenced via a kept .LC0 symbol). walk changes -> changed lists only walk (an alias is not a separate function); start unchanged. */
extern int printk(const char *fmt, ...);
int __attribute__((noinline)) walk(int depth)
{
	if (depth <= 0)
		return 0;
	printk("d %d\n", depth);
	return walk(depth - 1) + 1;
}

int start(int d)
{
	return walk(d) * 3;
}
