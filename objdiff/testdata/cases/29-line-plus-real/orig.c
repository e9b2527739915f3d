/* case: fix_quota gets a real change spanning extra lines (a new check), which shifts __LINE__ of the might_sleep() in later function sync_quota (immediate only) -> changed fix_quota only, no_functional_change false, exit 0. */
#line 3 "fs/demo/quota.c"
extern void __might_sleep(const char *file, int line);
#define might_sleep() __might_sleep(__FILE__, __LINE__)
extern int commit_quota(int);

int fix_quota(int q)
{
	might_sleep();
	return commit_quota(q);
}

int sync_quota(int q)
{
	might_sleep();
	return commit_quota(q + 1) + 1;
}
