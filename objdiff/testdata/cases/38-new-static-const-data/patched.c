/* case: map_prio gains a new static const lookup table prio_map (.rodata.prio_map, a named STT_OBJECT) -> map_prio changed, new_data prio_map (a named object only in patched; unlike string literals it is listed). */
static const signed char prio_map[8] = { 3, 1, 0, 2, 7, 5, 4, 6 };

int map_prio(int p)
{
	return prio_map[p & 7];
}
