/* case: check_dev (which contains a WARN_ON with a __bug_table entry) gets a real change (mask 0xff -> 0x7f) on the same lines; check_bus and both bug table entries are unchanged -> changed check_dev, no_functional_change false, exit 0. */
#line 3 "drivers/demo/warn-real-change.c" /* same __FILE__ in both builds */
#define BUGFLAG_WARNING 1
#define __WARN_FLAGS(flags)						\
	asm volatile("1:\tud2\n"					\
		     ".pushsection __bug_table,\"aw\"\n"		\
		     "2:\t.long 1b - .\n"				\
		     "\t.long %c0 - .\n"				\
		     "\t.word %c1\n"					\
		     "\t.word %c2\n"					\
		     "\t.org 2b + %c3\n"				\
		     ".popsection"					\
		     : : "i" (__FILE__), "i" (__LINE__),		\
		         "i" (flags), "i" (12))
#define WARN_ON(cond) ({						\
	int __ret = !!(cond);						\
	if (__builtin_expect(__ret, 0))					\
		__WARN_FLAGS(BUGFLAG_WARNING);				\
	__ret; })

extern int hw_status(int);

int check_dev(int id)
{
	int s = hw_status(id);

	WARN_ON(s < 0);
	return s & 0xff;
}

int check_bus(int id)
{
	int s = hw_status(id + 100);

	if (WARN_ON(s == 7))
		return -1;
	return s;
}
