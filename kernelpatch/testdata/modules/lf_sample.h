/* SPDX-License-Identifier: GPL-2.0 */
/*
 * A hand-written live patch of /proc/cmdline for the kernelpatch tests,
 * included by lf_sample1.c and lf_sample2.c with LF_SAMPLE_TEXT and
 * LF_SAMPLE_REPLACE set. (Real live patches come from livefix-build.)
 */
#include <linux/module.h>
#include <linux/livepatch.h>
#include <linux/seq_file.h>

static int lf_sample_cmdline_show(struct seq_file *m, void *v)
{
	seq_printf(m, "%s\n", LF_SAMPLE_TEXT);
	return 0;
}

static struct klp_func lf_sample_funcs[] = {
	{ .old_name = "cmdline_proc_show", .new_func = lf_sample_cmdline_show },
	{ }
};

static struct klp_object lf_sample_objs[] = {
	{ .funcs = lf_sample_funcs }, /* name NULL: vmlinux */
	{ }
};

static struct klp_patch lf_sample_patch = {
	.mod = THIS_MODULE,
	.objs = lf_sample_objs,
	.replace = LF_SAMPLE_REPLACE,
};

static int __init lf_sample_init(void)
{
	return klp_enable_patch(&lf_sample_patch);
}

static void __exit lf_sample_exit(void)
{
}

module_init(lf_sample_init);
module_exit(lf_sample_exit);
MODULE_LICENSE("GPL");
MODULE_INFO(livepatch, "Y");
