/* case: patched adds a global variable handled_total (.bss.handled_total) updated by handle(); new_data handled_total, handle changed. */
int handle(int cmd)
{
	return cmd * 2;
}
