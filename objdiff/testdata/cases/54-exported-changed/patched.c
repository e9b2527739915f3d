/* case: exported functions. EXPORT_SYMBOL and EXPORT_SYMBOL_GPL as the x86-64 kernel emits them: a struct kernel_symbol of three PC-relative offsets in section ___ksymtab+NAME (___ksymtab_gpl+NAME), the name in __ksymtab_strings, all through asm labels. demo_get changes; demo_put (GPL) does not -> changed demo_get, exit 0, and the export sections are not copied (the running export keeps pointing at the original, which the live patch redirects). */
extern int printk(const char *fmt, ...);

#define DEMO_EXPORT(sym, sec)							\
	asm("	.section \"__ksymtab_strings\",\"aMS\",%progbits,1\n"		\
	    "__kstrtab_" #sym ":\n"						\
	    "	.asciz \"" #sym "\"\n"						\
	    "__kstrtabns_" #sym ":\n"						\
	    "	.asciz \"\"\n"							\
	    "	.previous\n"							\
	    "	.section \"___ksymtab" sec "+" #sym "\", \"a\"\n"		\
	    "	.balign 4\n"							\
	    "__ksymtab_" #sym ":\n"						\
	    "	.long " #sym " - .\n"						\
	    "	.long __kstrtab_" #sym " - .\n"					\
	    "	.long __kstrtabns_" #sym " - .\n"				\
	    "	.previous\n")

int demo_refs;

int demo_get(int n)
{
	demo_refs += n;
	if (demo_refs > 1000)
		demo_refs = 1000;
	return demo_refs;
}
DEMO_EXPORT(demo_get, "");

int demo_put(int n)
{
	demo_refs -= n;
	if (demo_refs < 0)
		printk("demo: underflow\n");
	return demo_refs;
}
DEMO_EXPORT(demo_put, "_gpl");
