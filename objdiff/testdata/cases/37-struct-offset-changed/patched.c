/* case: a field is inserted before "state" in a struct accessed through an extern global: get_state reloc R_X86_64_PC32 cfg+0 -> cfg+4 (bytes identical) -> get_state changed; get_id (cfg-4) unchanged. */
struct config {
	int id;
	int gen;
	int state;
	int flags;
};
extern struct config cfg;

int get_state(void)
{
	return cfg.state;
}

int get_id(void)
{
	return cfg.id;
}
