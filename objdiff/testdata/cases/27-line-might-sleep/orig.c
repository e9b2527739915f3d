/* case: two comment lines added above might_sleep() users shift __LINE__; the only object difference is the line immediate (mov $N,%esi) passed to __might_sleep in both functions -> no_functional_change, exit 4. #line pins __FILE__ so orig.c/patched.c builds share the file string. */
#line 3 "drivers/demo/line-might-sleep.c" /* same __FILE__ in both builds */
extern void __might_sleep(const char *file, int line);
#define might_sleep() __might_sleep(__FILE__, __LINE__)
extern int do_io(int);

int read_block(int blk)
{
	might_sleep();
	return do_io(blk);
}

int write_block(int blk)
{
	might_sleep();
	return do_io(blk | 0x100);
}
