/* case: KPATCH_IGNORE_SECTION naming a section neither object has (a typo) -> refused ".data.limitt" "ignored section missing", so that nothing is silently left unignored; exit 3. */
int limit = 1;

int get_limit(int x)
{
	return limit + x + 1;
}
