/* case: KPATCH_FORCE_UNSAFE on a changed global notrace function (refused on its own: other files would keep calling the old copy) -> read_hw escalated under its own local name, its traced caller read_api changed, the override listed as forced; exit 0. */
#define notrace __attribute__((no_instrument_function))
#define noinline __attribute__((noinline))
extern int hw_reg(int);

notrace noinline int read_hw(int n)
{
	return hw_reg(n * 4 + 1);
}

int read_api(int n)
{
	return read_hw(n) + 1;
}
static void *force_read_hw __attribute__((used, section(".livefix.force_unsafe"))) = (void *)read_hw;
