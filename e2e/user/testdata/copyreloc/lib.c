/* libcnt: an exported variable the program refers to directly, so the
 * program's link copies it into the program (R_X86_64_COPY) and the
 * library's own code reaches the program's copy through its GOT. */
int counter = 5;

int get(void)
{
	return counter;
}
