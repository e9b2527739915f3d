/* case: __attribute__((cold)) added to log_event: gcc 12 moves it from .text.log_event to .text.unlikely.log_event (and optimizes it for size); same symbol name in another section -> changed. */
extern int printk(const char *fmt, ...);

int log_event(int ev, int arg)
{
	int i, s = 0;

	for (i = 0; i < ev; i++)
		s += arg * i;
	printk("event %d %d\n", ev, s);
	return s;
}

int other(int x)
{
	return x * 9;
}
