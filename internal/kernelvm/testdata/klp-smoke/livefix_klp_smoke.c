// SPDX-License-Identifier: GPL-2.0
/*
 * livefix_klp_smoke: the smallest useful live patch, used by the kernelvm
 * smoke test. It replaces cmdline_proc_show() in vmlinux, so that reading
 * /proc/cmdline prints a fixed line while the patch is enabled.
 */
#include <linux/kernel.h>
#include <linux/livepatch.h>
#include <linux/module.h>
#include <linux/seq_file.h>

static int livefix_cmdline_proc_show(struct seq_file *m, void *v)
{
	seq_puts(m, "livefix-smoke: patched\n");
	return 0;
}

static struct klp_func smoke_funcs[] = {
	{
		.old_name = "cmdline_proc_show",
		.new_func = livefix_cmdline_proc_show,
	},
	{}
};

static struct klp_object smoke_objs[] = {
	{
		/* A NULL name means vmlinux. */
		.funcs = smoke_funcs,
	},
	{}
};

static struct klp_patch smoke_patch = {
	.mod = THIS_MODULE,
	.objs = smoke_objs,
};

static int __init smoke_init(void)
{
	return klp_enable_patch(&smoke_patch);
}

static void __exit smoke_exit(void)
{
}

module_init(smoke_init);
module_exit(smoke_exit);
MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("livefix kernelvm smoke live patch");
MODULE_INFO(livepatch, "Y");
