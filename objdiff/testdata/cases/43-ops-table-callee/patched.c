/* case: static functions referenced only from a writable ops struct (struct file_ops demo_ops in .data.demo_ops, R_X86_64_64 relocs to dev_open/dev_read); dev_read changes. The data object is unchanged (its relocs still target the same correlated symbols) -> only dev_read changed, no refusal. */
extern int printk(const char *fmt, ...);

struct file_ops {
	int (*open)(int);
	int (*read)(int, char *, int);
	int flags;
};

static int dev_open(int fd)
{
	printk("open %d\n", fd);
	return 0;
}

static int dev_read(int fd, char *buf, int len)
{
	if (len > 32)
		len = 32;
	buf[0] = (char)fd;
	return len;
}

struct file_ops demo_ops = {
	.open = dev_open,
	.read = dev_read,
	.flags = 1,
};
