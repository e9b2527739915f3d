/* case: a function placed in .init.text (kernel __init) changes its constant -> refused my_driver_init "init code changed", exit 3; the normal function is untouched. */
#define __init __attribute__((section(".init.text")))
extern int register_driver(int id, int flags);

int __init my_driver_init(void)
{
	return register_driver(7, 0x30);
}

int my_driver_probe(int dev)
{
	return dev + 1;
}
