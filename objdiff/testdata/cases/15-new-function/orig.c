/* case: patched adds a static noinline function validate() (kept out of line) called from the changed function handle(); validate is new, handle changed. */
extern int printk(const char *fmt, ...);

int handle(int cmd)
{
	printk("cmd %d\n", cmd);
	return cmd * 2;
}
