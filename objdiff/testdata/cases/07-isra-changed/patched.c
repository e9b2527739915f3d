/* case: IPA-SRA: a static noinline function taking a struct by value-like pointer, reading only fields, becomes dev_weight.isra.0 (scalar args); its body changes -> only dev_weight.isra.0 changed. */
struct dev {
	int id;
	int flags;
	long pad[4];
};

extern int printk(const char *fmt, ...);

static int __attribute__((noinline)) dev_weight(struct dev d)
{
	printk("dev %d\n", d.flags);
	return d.flags * 5 + d.id;
}

int probe(struct dev *d)
{
	return dev_weight(*d) + 1;
}

int remove_dev(struct dev *d)
{
	return dev_weight(*d) - 1;
}
