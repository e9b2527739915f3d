/* case: a notrace (no_instrument_function, noinline so irq_count keeps calling it) function changes; gcc emits no __fentry__ call in it -> refused raw_irq_count "no fentry", exit 3; irq_count unchanged. */
#define notrace __attribute__((no_instrument_function))
extern int read_reg(int);

notrace __attribute__((noinline)) int raw_irq_count(int cpu)
{
	return read_reg(cpu * 8 + 0x48);
}

int irq_count(int cpu)
{
	return raw_irq_count(cpu) + 1;
}
