/* case: patched adds an initialized file-scope static variable (static int threshold = 5, .data.threshold) that handle() reads and set_threshold() writes; new_data threshold, new set_threshold, handle changed. */
int handle(int cmd)
{
	return cmd * 2;
}
