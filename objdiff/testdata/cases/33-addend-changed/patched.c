/* case: arr[1] -> arr[2] of an extern array: identical bytes, only the R_X86_64_PC32 addend changes (arr+0 -> arr+4; PC-relative addends include -4) -> second changed, first unchanged. */
extern int arr[];

int second(void)
{
	return arr[2];
}

int first(void)
{
	return arr[0];
}
