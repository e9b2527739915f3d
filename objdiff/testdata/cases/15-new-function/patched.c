/* case: patched adds a static noinline function validate() (kept out of line) called from the changed function handle(); validate is new, handle changed. */
extern int printk(const char *fmt, ...);

static int __attribute__((noinline)) validate(int cmd)
{
	if (cmd < 0 || cmd > 64) {
		printk("bad cmd %d\n", cmd);
		return 0;
	}
	return 1;
}

int handle(int cmd)
{
	if (!validate(cmd))
		return -22;
	printk("cmd %d\n", cmd);
	return cmd * 2;
}
