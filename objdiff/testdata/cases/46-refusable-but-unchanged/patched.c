/* case: an __init function, a notrace function and a writable global all stay unchanged while an ordinary function changes -> only do_stuff changed, nothing refused, exit 0 (refusals apply to changed symbols only). */
#define __init __attribute__((section(".init.text")))
#define notrace __attribute__((no_instrument_function))
extern int setup(int);

int tunable = 7;

int __init demo_init(void)
{
	return setup(tunable);
}

notrace __attribute__((noinline)) int raw_read(int r)
{
	return setup(r + tunable);
}

int do_stuff(int x)
{
	return raw_read(x) + 2;
}
