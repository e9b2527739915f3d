/* case: only the split-off cold part changes (report_error(r * 3) -> r * 4): submit.cold bytes change, submit bytes and relocs (jump to .text.unlikely.submit-4) stay identical. The parent is listed too: the cold block is only reached by jumps from submit, so it can only be replaced by replacing submit (convention: a changed .cold child marks its parent changed). */
extern int printk(const char *fmt, ...);
extern void report_error(int code) __attribute__((cold));
extern int queue_it(int);
extern int stats[4];

int submit(int req)
{
	int r = queue_it(req + 1);

	if (r < 0) {
		report_error(r * 4);
		stats[0]++;
		stats[1] += r;
		printk("submit failed %d %d\n", r, req);
		return -5;
	}
	return r + stats[2];
}
