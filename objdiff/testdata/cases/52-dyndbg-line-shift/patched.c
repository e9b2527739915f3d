/* case: dynamic debug (CONFIG_DYNAMIC_DEBUG with jump labels): each pr_debug site has a descriptor __UNIQUE_ID_ddebugN.M in __dyndbg (strings, line, flags, static key) and a __jump_table entry pointing at its key. The patch adds a line and a new pr_debug at the top of parse_hdr (renumbering every descriptor and moving every line below) and changes parse_hdr's code; parse_body only moves -> changed parse_hdr only, no new data, exit 0; the output carries parse_hdr's own two descriptors. */
#line 2 "drivers/demo/parse.c"
struct demo_key { int enabled; long type; };
struct demo_ddebug {
	const char *modname, *function, *filename, *format;
	unsigned int lineno:18, class_id:6, flags:8;
	struct demo_key key;
} __attribute__((aligned(8)));

extern void demo_dynamic_pr_debug(struct demo_ddebug *d, const char *fmt, ...);

static inline __attribute__((always_inline)) int demo_branch(struct demo_key *k)
{
	asm goto("1: .byte 0x0f,0x1f,0x44,0x00,0x00\n\t"
		 ".pushsection __jump_table, \"aw\"\n\t"
		 ".balign 8\n\t"
		 ".long 1b - ., %l[yes] - .\n\t"
		 ".quad %c0 + 1 - .\n\t"
		 ".popsection"
		 : : "i"(k) : : yes);
	return 0;
yes:
	return 1;
}

#define DEMO_CAT2(a, b) a##b
#define DEMO_CAT(a, b) DEMO_CAT2(a, b)
#define demo_pr_debug_id(id, fmt, ...) do {						\
	static struct demo_ddebug __attribute__((used, section("__dyndbg"), aligned(8))) id = {\
		.modname = "demo", .function = __func__, .filename = __FILE__,		\
		.format = fmt, .lineno = __LINE__, .class_id = 63 };			\
	if (demo_branch(&id.key))							\
		demo_dynamic_pr_debug(&id, fmt, ##__VA_ARGS__);				\
} while (0)
#define pr_debug(fmt, ...) demo_pr_debug_id(DEMO_CAT(__UNIQUE_ID_ddebug, __COUNTER__), fmt, ##__VA_ARGS__)

int parse_hdr(const unsigned char *p, int len)
{
	pr_debug("hdr: checking %d bytes\n", len);
	if (len < 8)
		return -1;
	pr_debug("hdr: %d bytes\n", len);
	return p[0] | p[1] << 8;
}

int parse_body(const unsigned char *p, int len)
{
	int sum = 0;

	for (int i = 4; i < len; i++)
		sum += p[i];
	pr_debug("body: sum %d\n", sum);
	return sum;
}
