/* case: a module's __exit function (section .exit.text, notrace, as the kernel's __exit) swaps two calls, like a stable fix of an unregister order -> refused my_driver_exit "exit code changed" (not "no fentry"), exit 3; my_driver_probe untouched. */
#define __exit __attribute__((section(".exit.text"), no_instrument_function, cold))
extern void unregister_ops(int id);
extern void unregister_table(int id);

void __exit my_driver_exit(void)
{
	unregister_table(2);
	unregister_ops(1);
}

int my_driver_probe(int dev)
{
	return dev + 1;
}
