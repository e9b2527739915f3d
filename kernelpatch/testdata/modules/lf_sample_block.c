// SPDX-License-Identifier: GPL-2.0
/*
 * A live patch of lf_block_wait in module lf_block. While a task sleeps in
 * the original lf_block_wait, the patching transition cannot finish.
 */
#include <linux/module.h>
#include <linux/livepatch.h>

static int lf_sample_block_wait(void)
{
	return -EIO; /* not EINTR: busybox cat would retry forever */
}

static struct klp_func lf_sample_block_funcs[] = {
	{ .old_name = "lf_block_wait", .new_func = lf_sample_block_wait },
	{ }
};

static struct klp_object lf_sample_block_objs[] = {
	{ .name = "lf_block", .funcs = lf_sample_block_funcs },
	{ }
};

static struct klp_patch lf_sample_block_patch = {
	.mod = THIS_MODULE,
	.objs = lf_sample_block_objs,
};

static int __init lf_sample_block_init(void)
{
	return klp_enable_patch(&lf_sample_block_patch);
}

static void __exit lf_sample_block_exit(void)
{
}

module_init(lf_sample_block_init);
module_exit(lf_sample_block_exit);
MODULE_LICENSE("GPL");
MODULE_INFO(livepatch, "Y");
