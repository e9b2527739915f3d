/* case: changed read-only data reached through a table that a function reads: the policy changes, the ops table pointing at it is unchanged in bytes but now means something else, and demo_lookup reads the table -> changed demo_lookup (it carries copies of the table and of the policy); exit 0. */
struct policy { int type, len; };
struct ops { int cmd; const struct policy *policy; };

static const struct policy demo_policy[3] = {
	{ 1, 4 }, { 2, 32 }, { 3, 0 },
};

static const struct ops demo_ops[2] = {
	{ .cmd = 1, .policy = demo_policy },
	{ .cmd = 2, .policy = demo_policy + 1 },
};

int demo_lookup(int cmd, int attr)
{
	for (int i = 0; i < 2; i++)
		if (demo_ops[i].cmd == cmd)
			return demo_ops[i].policy[attr].len;
	return -1;
}
