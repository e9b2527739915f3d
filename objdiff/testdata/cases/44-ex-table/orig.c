/* case: two functions emit __ex_table entries via inline asm ({.long insn-., .long fixup-., .long type}, R_X86_64_PC32 relocs to .text.<fn>+off). get_user_a gains a NULL check before the faulting load, so its code AND its __ex_table entry addends change; get_user_b and its entry are unchanged -> only get_user_a changed (the shared __ex_table section is not a symbol and is not refused). */
#define safe_load(dst, ptr)						\
	asm volatile("1:\tmovl (%1), %0\n"				\
		     "2:\n"						\
		     ".pushsection __ex_table,\"a\"\n"			\
		     "\t.balign 4\n"					\
		     "\t.long 1b - .\n"					\
		     "\t.long 2b - .\n"					\
		     "\t.long 0\n"					\
		     ".popsection"					\
		     : "=r" (dst) : "r" (ptr))

int get_user_a(const int *uptr)
{
	int v;

	safe_load(v, uptr);
	return v;
}

int get_user_b(const int *uptr)
{
	int v;

	safe_load(v, uptr);
	return v * 2;
}
