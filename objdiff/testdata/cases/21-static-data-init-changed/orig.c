/* case: a writable file-scope static (written by set_mode, so gcc keeps it in .data.mode) changes initial value 1 -> 2 -> refused mode "data initial value changed", exit 3. */
static int mode = 1;

void set_mode(int m)
{
	mode = m;
}

int get_mode(void)
{
	return mode;
}
