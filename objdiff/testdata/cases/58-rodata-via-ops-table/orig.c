/* case: changed read-only data reached only through an ops table: a static const policy array is referenced only by a static const ops table, which only a writable family structure (registered at boot) points at. No function uses either, so no replaced code could reach the new values -> refused demo_policy "not reachable" (never "no functional change"); exit 3. */
struct policy { int type, len; };
struct ops { int cmd; const struct policy *policy; int (*doit)(int); };
struct family { const struct ops *ops; int n; };

static int demo_doit(int x) { return x + 1; }

static const struct policy demo_policy[3] = {
	{ 1, 4 }, { 2, 16 }, { 3, 0 },
};

static const struct ops demo_ops[] = {
	{ .cmd = 1, .policy = demo_policy, .doit = demo_doit },
};

struct family demo_family = { .ops = demo_ops, .n = 1 };
