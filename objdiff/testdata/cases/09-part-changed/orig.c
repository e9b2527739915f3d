/* case: partial inlining: the fast path of a static function is inlined, the slow path becomes check.part.0; a change in the slow path changes only check.part.0. */
extern int printk(const char *fmt, ...);
extern int slow_op(int, int);

static int check(int *p, int v)
{
	if (__builtin_expect(!p, 1))
		return 0;
	printk("slow path %d\n", v);
	*p += slow_op(v, 1);
	*p += slow_op(v, 2);
	*p += slow_op(v, 3);
	*p += slow_op(v, 4);
	*p ^= slow_op(*p, 5);
	return *p;
}

int user_a(int *p, int v)
{
	return check(p, v) + 1;
}

int user_b(int *p, int v)
{
	return check(p, v + 3) - 1;
}
