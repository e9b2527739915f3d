/* case: a changed function owns an entry in a special section the engine has no handler for (".mydrv.hooks", emitted by inline asm with an R_X86_64_64 reloc back into .text.hook_point). A new function body cannot be carried along with an unknown per-entry section -> refused hook_point "unsupported section", exit 3. (Design choice of this suite: unknown non-standard sections referencing a changed function are refused rather than silently dropped.) */
#define HOOK_SITE()							\
	asm volatile("1:\tnop\n"					\
		     ".pushsection .mydrv.hooks,\"aw\"\n"		\
		     "\t.balign 8\n"					\
		     "\t.quad 1b\n"					\
		     ".popsection")
extern int process(int);

int hook_point(int x)
{
	HOOK_SITE();
	return process(x) + 1;
}

int plain(int x)
{
	return process(x * 2);
}
