/* case: writable global array grows (int limits[4] -> int limits[5], .data.limits 16 -> 20 bytes); code of get_limit is byte-identical -> refused limits "data size changed", nothing changed, exit 3. */
int limits[4] = { 10, 20, 30, 40 };

int get_limit(int i)
{
	return limits[i];
}
