/* case: special statics: a lockdep class key (static struct lock_class_key __key, a zero-size object as without CONFIG_LOCKDEP), a once-flag in .data.once (__already_done) and a ratelimit state (_rs) in reset_dev, and another once-flag in probe_dev. The patch adds demo_quirk with a once-warning before probe_dev (renumbering every static) and changes reset_dev's code -> changed reset_dev, new demo_quirk (probe_dev's statics are renumbered, not changed), no new data listed; the output has reset_dev's own copies of its three statics and no reference to the running ones. */
#line 2 "drivers/demo/dev.c"
struct lock_class_key { };
struct ratelimit_state { int interval, burst, printed, missed; };
struct demo_dev { int state; void *lock; };

extern void demo_lock_init(void **lock, const char *name, struct lock_class_key *key);
extern int demo_ratelimit(struct ratelimit_state *rs, const char *func);
extern int printk(const char *fmt, ...);

#define demo_once(fmt, ...) ({							\
	static _Bool __attribute__((section(".data.once"))) __already_done;	\
	int ret_ = !__already_done;						\
	if (ret_) { __already_done = 1; printk(fmt, ##__VA_ARGS__); }		\
	ret_; })
#define demo_ratelimited(fmt, ...) do {						\
	static struct ratelimit_state _rs = { 500, 10, 0, 0 };			\
	if (demo_ratelimit(&_rs, __func__))					\
		printk(fmt, ##__VA_ARGS__);					\
} while (0)
#define demo_init_lock(l) do {							\
	static struct lock_class_key __key;					\
	demo_lock_init(l, #l, &__key);						\
} while (0)

int probe_dev(struct demo_dev *d)
{
	if (d->state < 0)
		demo_once("probe: bad state %d\n", d->state);
	return d->state;
}

int reset_dev(struct demo_dev *d)
{
	demo_init_lock(&d->lock);
	if (d->state > 3) {
		demo_once("reset: state %d\n", d->state);
		demo_ratelimited("reset: busy\n");
		return -1;
	}
	d->state = 0;
	return 0;
}
