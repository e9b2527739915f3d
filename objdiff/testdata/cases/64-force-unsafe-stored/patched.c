/* case: KPATCH_FORCE_UNSAFE on a changed notrace static function whose address an ops table stores (refused on its own) and that a traced function calls -> op_get escalated, caller direct_get changed (the table keeps the old copy), the override listed as forced; exit 0. */
#define notrace __attribute__((no_instrument_function))
#define noinline __attribute__((noinline))
extern int backend(int);
struct ops { int (*get)(int); };

static notrace noinline int op_get(int n)
{
	return backend(n) ^ 3;
}

const struct ops the_ops = { .get = op_get };

int direct_get(int n)
{
	return op_get(n) + 2;
}
static void *force_op_get __attribute__((used, section(".livefix.force_unsafe"))) = (void *)op_get;
