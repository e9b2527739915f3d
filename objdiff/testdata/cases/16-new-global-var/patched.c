/* case: patched adds a global variable handled_total (.bss.handled_total) updated by handle(); new_data handled_total, handle changed. */
long handled_total;

int handle(int cmd)
{
	handled_total += cmd;
	return cmd * 2;
}
