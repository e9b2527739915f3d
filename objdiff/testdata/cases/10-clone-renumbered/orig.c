/* case: clone renumbered without change. cflags force IPA-CP cloning per constant; orig: calc.constprop.0 (mode 2), calc.constprop.1 (mode 1); patched adds use_zero (mode 7) at the end and gcc 12 numbers its clone first: calc.constprop.0 (mode 7, new), .1 (mode 2), .2 (mode 1). Old clones must correlate by content, so only the new clone and use_zero appear. */
extern int printk(const char *fmt, ...);
extern int hw_read(int reg, int mode);

static int __attribute__((noinline)) calc(int reg, int mode)
{
	int v = hw_read(reg, 0);

	switch (mode) {
	case 1:
		v += hw_read(reg + 1, 1) * 3;
		v ^= hw_read(reg + 2, 1);
		break;
	case 2:
		printk("two %d\n", v);
		v -= hw_read(reg + 3, 2);
		break;
	case 7:
		printk("seven %d\n", v);
		v = hw_read(v, 7) << 2;
		break;
	default:
		v = hw_read(v, mode) + hw_read(v + 1, mode);
		printk("mode %d\n", mode);
		break;
	}
	return v;
}

int use_one(int r)
{
	return calc(r, 1);
}

int use_two(int r)
{
	return calc(r, 2);
}
