// SPDX-License-Identifier: GPL-2.0
/*
 * lf_block: an ordinary module whose /proc/lf_block blocks its reader in
 * lf_block_wait() until something is written to it. A task blocked there
 * keeps a live patch of lf_block_wait from finishing its transition, which
 * is how the kernelpatch test makes a transition time out.
 */
#include <linux/module.h>
#include <linux/proc_fs.h>
#include <linux/uaccess.h>
#include <linux/wait.h>

static DECLARE_WAIT_QUEUE_HEAD(lf_block_wq);
static int lf_block_released;

noinline int lf_block_wait(void)
{
	return wait_event_interruptible(lf_block_wq, READ_ONCE(lf_block_released));
}
EXPORT_SYMBOL_GPL(lf_block_wait);

static ssize_t lf_block_read(struct file *f, char __user *buf, size_t n, loff_t *pos)
{
	static const char msg[] = "released\n";
	int ret;

	if (*pos > 0)
		return 0;
	ret = lf_block_wait();
	if (ret)
		return ret;
	return simple_read_from_buffer(buf, n, pos, msg, sizeof(msg) - 1);
}

static ssize_t lf_block_write(struct file *f, const char __user *buf, size_t n, loff_t *pos)
{
	WRITE_ONCE(lf_block_released, 1);
	wake_up_all(&lf_block_wq);
	return n;
}

static const struct proc_ops lf_block_ops = {
	.proc_read = lf_block_read,
	.proc_write = lf_block_write,
};

static int __init lf_block_init(void)
{
	if (!proc_create("lf_block", 0600, NULL, &lf_block_ops))
		return -ENOMEM;
	return 0;
}

static void __exit lf_block_exit(void)
{
	remove_proc_entry("lf_block", NULL);
}

module_init(lf_block_init);
module_exit(lf_block_exit);
MODULE_LICENSE("GPL");
