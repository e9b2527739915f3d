/* case: map_prio gains a new static const lookup table prio_map (.rodata.prio_map, a named STT_OBJECT) -> map_prio changed, new_data prio_map (a named object only in patched; unlike string literals it is listed). */
int map_prio(int p)
{
	return p & 3;
}
