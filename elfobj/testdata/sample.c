/* Round-trip sample: functions, statics, strings, a jump table, TLS, weak and common symbols. */
extern int printf(const char *, ...);
extern int ext_array[16];

int global_counter = 3;
static int hidden_table[8] = {1, 2, 3, 5, 8, 13, 21, 34};
const char *const names[] = {"zero", "one", "two"};
__thread int per_thread;
int common_var __attribute__((common));
char big_bss[4096];

__attribute__((weak)) int weak_fn(int x) { return x + 1; }

static __attribute__((noinline)) int helper(int x)
{
	static int calls;
	calls++;
	return hidden_table[x & 7] + calls;
}

int dispatch(int op, int v)
{
	switch (op) {
	case 0: return v + 1;
	case 1: return v * 3;
	case 2: return helper(v);
	case 3: return v - 7;
	case 4: return ext_array[v & 15];
	case 5: return v << 2;
	case 6: return printf("six %d\n", v);
	case 7: return weak_fn(v);
	default: return -1;
	}
}

double scale(double d) { return d * 2.5 + 1.25; }

int use_tls(void) { return ++per_thread + global_counter; }

const char *name_of(int i) { return i >= 0 && i < 3 ? names[i] : "unknown"; }

__attribute__((cold)) void rare_path(void) { printf("rare\n"); }
