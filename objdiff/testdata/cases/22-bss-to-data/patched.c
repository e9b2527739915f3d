/* case: a zero-initialized global gains an initializer (int debug_level; -> int debug_level = 1;): the symbol moves from .bss.debug_level to .data.debug_level with the same size -> refused debug_level "data initial value changed", exit 3. */
int debug_level = 1;

int dbg_enabled(int lvl)
{
	return lvl <= debug_level;
}
