/* case: gcc splits the unlikely error path of submit() into submit.cold (.text.unlikely.submit); the hot code and the cold code both change -> submit and submit.cold changed. */
extern int printk(const char *fmt, ...);
extern void report_error(int code) __attribute__((cold));
extern int queue_it(int);
extern int stats[4];

int submit(int req)
{
	int r = queue_it(req + 2);

	if (r < 0) {
		report_error(r * 4);
		stats[0]++;
		stats[1] += r;
		printk("submit failed %d %d\n", r, req);
		return -5;
	}
	return r + stats[2];
}
