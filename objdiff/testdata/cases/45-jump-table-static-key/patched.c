/* case: static-key style asm goto: a 5-byte nop plus a __jump_table entry {.long 1b-., .long l_yes-., .quad key-.} (R_X86_64_PC32 x2 into .text.<fn>, R_X86_64_PC64 to the extern key). fast_path_a gains an early return before the static branch, so its code and its __jump_table entry addends change; fast_path_b unchanged -> only fast_path_a changed. */
struct static_key { int enabled; };
extern struct static_key trace_key;
extern int slow(int);

static inline __attribute__((always_inline)) int key_on(struct static_key *key)
{
	asm goto("1:\t.byte 0x0f,0x1f,0x44,0x00,0x00\n"
		 ".pushsection __jump_table, \"aw\"\n"
		 "\t.balign 8\n"
		 "\t.long 1b - ., %l[l_yes] - .\n"
		 "\t.quad %c0 - .\n"
		 ".popsection"
		 : : "i" (key) : : l_yes);
	return 0;
l_yes:
	return 1;
}

int fast_path_a(int x)
{
	if (x < 0)
		return 0;
	if (key_on(&trace_key))
		return slow(x + 1);
	return x;
}

int fast_path_b(int x)
{
	if (key_on(&trace_key))
		return slow(x * 3);
	return x - 1;
}
