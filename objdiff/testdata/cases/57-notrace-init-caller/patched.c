/* case: a changed notrace static function called from an __init function and a traced one: the init caller would have to be replaced, which a live patch cannot do -> refused boot_probe "init code changed" (naming the helper it calls), changed api_read listed next to it; exit 3. */
#define notrace __attribute__((no_instrument_function))
#define noinline __attribute__((noinline))
#define __init __attribute__((section(".init.text"), cold))
extern int read_reg(int);
extern int boot_val;

static notrace noinline int read_csr(int cpu)
{
	return read_reg(cpu * 8 + 0x48);
}

int api_read(int cpu)
{
	return read_csr(cpu) + 1;
}

int __init boot_probe(void)
{
	boot_val = read_csr(0);
	return 0;
}
