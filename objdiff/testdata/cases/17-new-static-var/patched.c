/* case: patched adds an initialized file-scope static variable (static int threshold = 5, .data.threshold) that handle() reads and set_threshold() writes; new_data threshold, new set_threshold, handle changed. */
static int threshold = 5;

void set_threshold(int t)
{
	threshold = t;
}

int handle(int cmd)
{
	if (cmd > threshold)
		return -1;
	return cmd * 2;
}
