/* case: caller changes while its out-of-line static callee (noinline, not cloned: both args vary) is unchanged; call reloc still targets the same local symbol -> only the caller changed. */
extern int printk(const char *fmt, ...);

static int __attribute__((noinline)) encode(int a, int b)
{
	printk("encode %d %d\n", a, b);
	return (a << 4) | (b & 15);
}

int pack(int a, int b)
{
	return encode(a, b) + 1;
}

int pack2(int a, int b)
{
	return encode(b, a);
}
