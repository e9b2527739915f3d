/* case: two functions each have a function-local "static int count"; gcc 12 numbers them in reverse definition order (tx_packet: count.0, rx_packet: count.1; sections .bss.count.N). Only rx_packet changes -> only it is changed; count.N must correlate via the referencing function. */
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
