/* case: writable global's initial value changes (int max_retries = 3 -> 5, .data.max_retries); readers' code unchanged -> refused max_retries "data initial value changed", exit 3. */
int max_retries = 5;

int should_retry(int n)
{
	return n < max_retries;
}
