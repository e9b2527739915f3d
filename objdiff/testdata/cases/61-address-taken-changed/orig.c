/* case: a changed function whose address the changed code stores (a work item's callback). The stored address must be the original's, which the live patch redirects, never the patch module's copy (freed when a later level replaces this one): handler, kick and run_now change; kick stores &handler and run_now calls handler directly -> changed handler, kick, run_now; exit 0; in the output kick's address reference is an undefined handler and run_now's call goes to the included copy. */
struct work { void (*fn)(struct work *); int arg; };
extern void queue_work(struct work *w);
extern int printk(const char *fmt, ...);

static __attribute__((noinline)) void handler(struct work *w)
{
	printk("work %d\n", w->arg);
}

void kick(struct work *w, int arg)
{
	w->arg = arg;
	w->fn = handler;
	queue_work(w);
}

void run_now(struct work *w)
{
	handler(w);
	handler(w);
}
