/* case: a value printed by a WARN-style __warn_printk call changes (5 -> 6); only the immediate before the call differs. It must count as a change, not as a __LINE__ shift: __warn_printk prints its arguments. */
extern void __warn_printk(const char *fmt, ...);
extern int check_limit(int v);

int report(int v)
{
	if (check_limit(v))
		__warn_printk("limit %d exceeded by %d\n", 6, v);
	return v;
}
