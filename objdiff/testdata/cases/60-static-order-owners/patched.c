/* case: zero-initialised function-local statics of equal size (static int hits) that their users tell apart: orig has them in count_rx and count_tx; the patch drops count_rx's and adds a new count_err with its own. By order alone count_err's static would take over count_rx's running value -> changed count_rx, new count_err, new_data its hits (never paired with count_rx's); exit 0. */
int count_rx(int n)
{
	return n;
}

int count_tx(int n)
{
	static int hits;

	hits -= n;
	return hits;
}

int count_err(int n)
{
	static int hits;

	hits += n * 2;
	return hits;
}
