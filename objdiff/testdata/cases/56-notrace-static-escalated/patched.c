/* case: a changed static function without an ftrace entry (notrace, as the kernel's "inline" and SYSCALL_DEFINE bodies are) cannot be redirected. Its new copy is included privately and its callers are replaced: read_csr changes; its callers are api_read (traced) and scaled (notrace too, so its own caller api_scaled is replaced) -> changed api_read, api_scaled; private read_csr, scaled; api_other untouched; exit 0. */
#define notrace __attribute__((no_instrument_function))
#define noinline __attribute__((noinline))
extern int read_reg(int);

static notrace noinline int read_csr(int cpu)
{
	return read_reg(cpu * 8 + 0x48);
}

static notrace noinline int scaled(int cpu, int k)
{
	return read_csr(cpu) * k + cpu;
}

int api_read(int cpu)
{
	return read_csr(cpu) + 1;
}

int api_scaled(int cpu)
{
	return scaled(cpu, 3) - 1;
}

int api_other(int cpu)
{
	return read_reg(cpu);
}
