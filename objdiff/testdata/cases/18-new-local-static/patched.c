/* case: handle() gains a function-local "static int calls" (gcc 12: calls.0 in .bss.calls.0); new_data calls.0, handle changed. */
int handle(int cmd)
{
	static int calls;

	calls++;
	return cmd * 2 + calls;
}

int peek(int x)
{
	return x;
}
