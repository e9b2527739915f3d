/* case: two functions each have a function-local "static int count"; gcc 12 names them count.0 / count.1 (.bss.count.0 / .bss.count.1). Only rx_packet changes -> only it is changed; count.N must correlate via the referencing function. */
extern int printk(const char *fmt, ...);

int rx_packet(int len)
{
	static int count;

	count += len;
	return count;
}

int tx_packet(int len)
{
	static int count;

	count++;
	if (count > 1000)
		printk("tx %d\n", len);
	return count;
}
