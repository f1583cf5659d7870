// SPDX-License-Identifier: GPL-2.0
/*
 * reshaper: runs a reshaper rule program (rules/engine/PROGRAM.md) on the
 * frames a Linux bridge forwards between two of its ports. A program is
 * verified by the engine's verifier before it replaces the old one (RCU);
 * frames already delayed leave at their time (at once on a clear).
 *
 * One job per file:
 *   reshaper_main.c  registration: per-namespace state, netdev notifier, module init/exit
 *   rs_hook.c        the netfilter hook and the namespace's program (get, replace)
 *   rs_frame.c       one frame through the engine, a GSO skb cut into its frames first
 *   rs_queue.c       the delay queue: enqueue, hrtimer, transmit, release and flush
 *   rs_genl.c        the generic netlink family: LOAD (and its checks), CLEAR, GET_STATS
 *   rs_engine.c      the engine itself (rules/engine/engine.c)
 *   rs_trace.c       the tracepoint reshaper:reshaper_frame (rs_trace.h), which rs_frame.c fires
 *   rs_kmod.h        what they share; reshaper_genl.h is all that user space reads
 */
#include <linux/mm.h>
#include <linux/module.h>

#include "rs_kmod.h"

unsigned int rs_net_id __read_mostly;

static int __net_init rs_net_init(struct net *net)
{
	struct rs_net *rn = rs_pernet(net);

	rn->net = net;
	rs_queue_init(rn);
	return nf_register_net_hook(net, &rs_nf_ops);
}

static void __net_exit rs_net_exit(struct net *net)
{
	struct rs_net *rn = rs_pernet(net);

	nf_unregister_net_hook(net, &rs_nf_ops);	/* waits for running hooks */
	rs_queue_exit(rn);
	/* no hook and no operation can see it any more */
	kvfree(rcu_dereference_protected(rn->prog, true));
	RCU_INIT_POINTER(rn->prog, NULL);
}

static int rs_netdev_event(struct notifier_block *nb, unsigned long event, void *ptr)
{
	struct net_device *dev = netdev_notifier_info_to_dev(ptr);

	if (event == NETDEV_UNREGISTER)
		rs_flush_dev(rs_pernet(dev_net(dev)), dev);
	return NOTIFY_DONE;
}

static struct notifier_block rs_netdev_notifier = {
	.notifier_call = rs_netdev_event,
};

static struct pernet_operations rs_net_ops = {
	.init	= rs_net_init,
	.exit	= rs_net_exit,
	.id	= &rs_net_id,
	.size	= sizeof(struct rs_net),
};

static int __init rs_init(void)
{
	int err;

	err = register_pernet_subsys(&rs_net_ops);
	if (err)
		return err;
	err = register_netdevice_notifier(&rs_netdev_notifier);
	if (err)
		goto pernet;
	err = genl_register_family(&rs_family);
	if (err)
		goto notifier;
	return 0;
notifier:
	unregister_netdevice_notifier(&rs_netdev_notifier);
pernet:
	unregister_pernet_subsys(&rs_net_ops);
	return err;
}

static void __exit rs_exit(void)
{
	genl_unregister_family(&rs_family);	/* no operation runs after this */
	unregister_netdevice_notifier(&rs_netdev_notifier);
	unregister_pernet_subsys(&rs_net_ops);	/* hooks, queues, programs */
}

module_init(rs_init);
module_exit(rs_exit);
MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("reshaper: rule programs on bridged frames (netfilter, generic netlink)");
MODULE_ALIAS_GENL_FAMILY(RESHAPER_GENL_NAME);
