/* case: numbered static locals renumber. gcc 12 numbers function-local statics in REVERSE definition order: orig rx->count.1, tx->count.0; patched appends probe_hits with "static int hits" -> hits.0, and now rx->count.2, tx->count.1 (code refers to section symbols .bss.count.N). Nothing existing changed -> new probe_hits, new_data hits.0. */
int rx(int n)
{
	static int count;

	count += n;
	return count;
}

int tx(int n)
{
	static int count;

	count -= n;
	return count;
}

int probe_hits(void)
{
	static int hits;

	return ++hits;
}
