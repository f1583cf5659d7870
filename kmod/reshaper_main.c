// SPDX-License-Identifier: GPL-2.0
/*
 * reshaper: runs a reshaper rule program (rules/engine/PROGRAM.md) on the
 * frames a Linux bridge forwards between two of its ports.
 *
 * One hook per network namespace at NF_BR_POST_ROUTING. A frame the bridge
 * forwards from port a to port b (or back) is given to the engine as it
 * appears on port a's VLAN interface: the Ethernet header pushed back, an
 * inner tag the receive path took into skb->vlan_tci put back into the
 * bytes. The verdict is carried out here: drop, clone for duplicates, and
 * for delays the skb is stolen into a per-namespace queue that an hrtimer
 * drains with dev_queue_xmit on the out port. A GSO skb is stolen and cut
 * into its wire frames first, each of them a frame as above (rs_gso).
 *
 * Control: generic netlink family "reshaper" (reshaper_genl.h), every
 * operation needs CAP_NET_ADMIN in the initial user namespace. A program is
 * verified by the engine's verifier before it replaces the old one (RCU);
 * frames already delayed leave at their time (at once on a clear).
 *
 * Locking: genl_mutex serialises the operations (the family is not
 * parallel_ops). rs_run() keeps its state (PRNG, counters, timing) in the
 * program, so one spinlock per program serialises the engine: simple, and
 * a bottleneck on many cores (first version).
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/module.h>
#include <linux/netdevice.h>
#include <linux/skbuff.h>
#include <linux/if_vlan.h>
#include <linux/netfilter.h>
#include <linux/netfilter_bridge.h>
#include <linux/hrtimer.h>
#include <linux/mm.h>
#include <net/genetlink.h>
#include <net/net_namespace.h>
#include <net/netns/generic.h>
#include <asm/unaligned.h>

#include "rs_program.h"		/* the engine's API: rs_engine.c builds engine.c */
#include "reshaper_genl.h"

#define RS_QUEUE_LIMIT	 10000			/* delayed frames per namespace */
#define RS_MAX_STATE	 (64u << 20)		/* rate queues can ask for a lot */

struct rs_prog {
	spinlock_t lock;	/* the engine state and the port counters */
	int ifindex[2];		/* port a, port b */
	u32 len, state_size;
	u32 grow;		/* tailroom push_vlan may need */
	struct reshaper_port_stats port[2];
	u8 *state;
	u8 code[];		/* the program, then the state */
};

struct rs_net {
	struct rs_prog __rcu *prog;	/* changed under genl_mutex */
	struct net *net;
	spinlock_t qlock;		/* queue, queue_drops, timer arming */
	struct sk_buff_head queue;	/* delayed frames, by departure time */
	struct hrtimer timer;
	u64 queue_drops;
};

struct rs_skb_cb {			/* a queued frame (owns skb->cb) */
	u64 due;
	int ifindex;
};
#define RS_CB(skb) ((struct rs_skb_cb *)(skb)->cb)

static unsigned int rs_net_id __read_mostly;

/* ---- delay queue ---------------------------------------------------------- */

static void rs_xmit(struct rs_net *rn, struct sk_buff *skb)
{
	struct net_device *dev = dev_get_by_index_rcu(rn->net, RS_CB(skb)->ifindex);

	if (!dev) {
		kfree_skb(skb);
		return;
	}
	memset(skb->cb, 0, sizeof(skb->cb));
	skb->dev = dev;
	skb->tstamp = 0;
	skb_push(skb, ETH_HLEN);
	dev_queue_xmit(skb);
}

static enum hrtimer_restart rs_timer(struct hrtimer *timer)
{
	struct rs_net *rn = container_of(timer, struct rs_net, timer);
	struct sk_buff_head due;
	struct sk_buff *skb;
	u64 now = ktime_get_ns();

	__skb_queue_head_init(&due);
	spin_lock(&rn->qlock);
	while ((skb = skb_peek(&rn->queue)) && RS_CB(skb)->due <= now) {
		__skb_unlink(skb, &rn->queue);
		__skb_queue_tail(&due, skb);
	}
	if (skb)	/* re-armed here, so never HRTIMER_RESTART */
		hrtimer_start(timer, ns_to_ktime(RS_CB(skb)->due), HRTIMER_MODE_ABS_SOFT);
	spin_unlock(&rn->qlock);

	rcu_read_lock();
	while ((skb = __skb_dequeue(&due)))
		rs_xmit(rn, skb);
	rcu_read_unlock();
	return HRTIMER_NORESTART;
}

/* Called with BHs off (hook). Returns false when the queue is full. */
static bool rs_enqueue(struct rs_net *rn, struct sk_buff *skb, u64 due, int ifindex)
{
	struct sk_buff *pos;

	spin_lock(&rn->qlock);
	if (skb_queue_len(&rn->queue) >= RS_QUEUE_LIMIT) {
		rn->queue_drops++;
		spin_unlock(&rn->qlock);
		kfree_skb(skb);
		return false;
	}
	RS_CB(skb)->due = due;
	RS_CB(skb)->ifindex = ifindex;
	/* mostly in order: walk from the tail */
	skb_queue_reverse_walk(&rn->queue, pos)
		if (RS_CB(pos)->due <= due)
			break;
	__skb_queue_after(&rn->queue, pos, skb);
	if (skb_peek(&rn->queue) == skb)
		hrtimer_start(&rn->timer, ns_to_ktime(due), HRTIMER_MODE_ABS_SOFT);
	spin_unlock(&rn->qlock);
	return true;
}

static void rs_purge(struct rs_net *rn)
{
	spin_lock_bh(&rn->qlock);
	__skb_queue_purge(&rn->queue);
	spin_unlock_bh(&rn->qlock);
}

/* Every queued frame leaves now (the program is cleared: nothing holds them any more). */
static void rs_release_all(struct rs_net *rn)
{
	struct sk_buff_head all;
	struct sk_buff *skb;

	__skb_queue_head_init(&all);
	spin_lock_bh(&rn->qlock);
	skb_queue_splice_init(&rn->queue, &all);
	spin_unlock_bh(&rn->qlock);
	rcu_read_lock();
	while ((skb = __skb_dequeue(&all)))
		rs_xmit(rn, skb);
	rcu_read_unlock();
}

/* A device going away takes the frames queued to leave by it, or still naming it, along. */
static void rs_flush_dev(struct rs_net *rn, struct net_device *dev)
{
	struct sk_buff_head gone;
	struct sk_buff *skb, *tmp;

	__skb_queue_head_init(&gone);
	spin_lock_bh(&rn->qlock);
	skb_queue_walk_safe(&rn->queue, skb, tmp) {
		if (RS_CB(skb)->ifindex == dev->ifindex || skb->dev == dev) {
			__skb_unlink(skb, &rn->queue);
			__skb_queue_tail(&gone, skb);
		}
	}
	spin_unlock_bh(&rn->qlock);
	__skb_queue_purge(&gone);
}

/* ---- the hook --------------------------------------------------------------- */

/* The frame as on the ingress VLAN interface, writable, linear, with room. */
static int rs_frame_prepare(struct sk_buff *skb, u32 grow, bool *csum_done)
{
	int room;

	skb_push(skb, ETH_HLEN);	/* the bridge pulled it; its okfn pushes it */
	skb_reset_mac_header(skb);
	if (skb_vlan_tag_present(skb)) {
		/* an inner tag: the port's own was removed by its VLAN device */
		__be16 proto = skb->vlan_proto;

		if (__vlan_insert_tag(skb, proto, skb_vlan_tag_get(skb)))
			return -ENOMEM;
		__vlan_hwaccel_clear_tag(skb);
		skb->protocol = proto;
	}
	if (skb_ensure_writable(skb, skb->len))
		return -ENOMEM;
	if (skb->ip_summed == CHECKSUM_PARTIAL) {
		if (skb_checksum_help(skb))
			return -EINVAL;
		*csum_done = true;
	}
	room = skb_tailroom(skb);
	if (room < grow && pskb_expand_head(skb, 0, grow - room, GFP_ATOMIC))
		return -ENOMEM;
	return 0;
}

/* Back to the layout the bridge's okfn expects: data past the Ethernet header. */
static void rs_frame_restore(struct sk_buff *skb)
{
	skb_reset_mac_header(skb);
	skb->protocol = eth_hdr(skb)->h_proto;
	skb->mac_len = ETH_HLEN;
	__skb_pull(skb, ETH_HLEN);
	skb_reset_network_header(skb);
}

/*
 * One wire frame through the engine, the verdict carried out as far as this can:
 * NF_ACCEPT, the caller sends skb on (the bridge's okfn); NF_DROP, the caller frees
 * it; NF_STOLEN, it waits in the delay queue. Duplicates are sent or queued here.
 */
static unsigned int rs_frame(struct rs_net *rn, struct rs_prog *p, struct sk_buff *skb,
			     const struct nf_hook_state *state, int port, bool csum_done)
{
	struct reshaper_port_stats *in_ps = &p->port[port - 1], *out_ps = &p->port[2 - port];
	int out = state->out->ifindex, i, err;
	struct rs_verdict v;
	u32 len;

	err = rs_frame_prepare(skb, p->grow, &csum_done);
	if (err) {
		spin_lock(&p->lock);
		in_ps->errors++;
		spin_unlock(&p->lock);
		return NF_DROP;
	}
	len = skb->len;

	spin_lock(&p->lock);
	rs_run(p->code, p->len, p->state, skb->data, len, len + skb_tailroom(skb),
	       port, 0, ktime_get_ns(), &v);
	in_ps->rx++;
	in_ps->csum_completed += csum_done;
	if (v.verdict == RS_V_DROP) {
		in_ps->dropped++;
	} else {
		out_ps->tx += 1 + v.copies;
		if (v.delay_ns)
			out_ps->delayed += 1 + v.copies;
	}
	spin_unlock(&p->lock);

	if (v.verdict == RS_V_DROP)
		return NF_DROP;
	if (v.len > len)
		__skb_put(skb, v.len - len);	/* push_vlan: within the tailroom given */
	else if (v.len < len)
		__skb_trim(skb, v.len);		/* linear: pop_vlan, truncate */
	if ((v.flags & RS_VF_MODIFIED) && skb->ip_summed == CHECKSUM_COMPLETE)
		skb->ip_summed = CHECKSUM_NONE;
	rs_frame_restore(skb);

	if (!v.delay_ns) {
		for (i = 0; i < v.copies; i++) {
			struct sk_buff *c = skb_clone(skb, GFP_ATOMIC);

			if (c)
				state->okfn(state->net, state->sk, c);
		}
		return NF_ACCEPT;
	}
	for (i = 0; i < v.copies; i++) {
		struct sk_buff *c = skb_clone(skb, GFP_ATOMIC);

		if (c)
			rs_enqueue(rn, c, ktime_get_ns() + v.delay_ns, out);
	}
	rs_enqueue(rn, skb, ktime_get_ns() + v.delay_ns, out);
	return NF_STOLEN;
}

/*
 * A GSO skb (TSO/GSO of a host behind veth or tap, GRO) stands for many wire frames,
 * and the rules work per wire frame: loss, rates, delays, counters, length and byte
 * matches, truncate. So it is stolen and cut into its wire frames, as a device without
 * TSO has it done on transmit, and each goes through rs_frame() like any frame, an
 * accepted one on through the bridge's okfn. No features asked for: the segments come
 * linear with their checksums computed as they are copied, which rs_frame_prepare()
 * would otherwise do in two more passes. What cannot be cut (a GSO type without
 * software segmentation, inconsistent headers) is dropped as oversize: never passed.
 */
static unsigned int rs_gso(struct rs_net *rn, struct rs_prog *p, struct sk_buff *skb,
			   const struct nf_hook_state *state, int port)
{
	/* its segments' checksums, left undone, are completed: counted as csum_completed */
	bool partial = skb->ip_summed == CHECKSUM_PARTIAL;
	struct sk_buff *segs, *seg, *next;

	skb_push(skb, ETH_HLEN);	/* segmentation starts at the MAC header */
	segs = skb_gso_segment(skb, 0);
	if (IS_ERR_OR_NULL(segs)) {
		spin_lock(&p->lock);
		if (PTR_ERR(segs) == -ENOMEM)
			p->port[port - 1].errors++;
		else
			p->port[port - 1].oversize++;
		spin_unlock(&p->lock);
		return NF_DROP;
	}
	consume_skb(skb);
	skb_list_walk_safe(segs, seg, next) {
		skb_mark_not_on_list(seg);
		__skb_pull(seg, ETH_HLEN);	/* as the bridge hands a frame to the hook */
		switch (rs_frame(rn, p, seg, state, port, partial)) {
		case NF_ACCEPT:
			state->okfn(state->net, state->sk, seg);
			break;
		case NF_DROP:
			kfree_skb(seg);
			break;
		}
	}
	return NF_STOLEN;
}

static unsigned int rs_hook(void *priv, struct sk_buff *skb,
			    const struct nf_hook_state *state)
{
	struct rs_net *rn = net_generic(state->net, rs_net_id);
	struct rs_prog *p;
	int port, out;

	p = rcu_dereference(rn->prog);
	if (!p || !state->out)
		return NF_ACCEPT;
	out = state->out->ifindex;
	if (skb->skb_iif == p->ifindex[0] && out == p->ifindex[1])
		port = RS_PORT_A;
	else if (skb->skb_iif == p->ifindex[1] && out == p->ifindex[0])
		port = RS_PORT_B;
	else
		return NF_ACCEPT;
	if (skb_is_gso(skb))
		return rs_gso(rn, p, skb, state, port);
	return rs_frame(rn, p, skb, state, port, false);
}

static const struct nf_hook_ops rs_nf_ops = {
	.hook		= rs_hook,
	.pf		= NFPROTO_BRIDGE,
	.hooknum	= NF_BR_POST_ROUTING,
	.priority	= NF_BR_PRI_LAST,
};

/* ---- generic netlink ---------------------------------------------------------- */

static struct genl_family rs_family;

static struct rs_prog *rs_prog_get(struct rs_net *rn)
{
	return rcu_dereference_protected(rn->prog, 1);	/* under genl_mutex */
}

/*
 * Swaps the program; after the grace period no hook uses the old one. Frames already
 * delayed (by either program: a hook may run the new one before the grace period ends)
 * hold nothing of a program and leave at the time they were given; when the program
 * is cleared, they leave at once.
 */
static void rs_prog_replace(struct rs_net *rn, struct rs_prog *p)
{
	struct rs_prog *old = rs_prog_get(rn);

	rcu_assign_pointer(rn->prog, p);
	if (!old)
		return;
	synchronize_net();
	if (!p)
		rs_release_all(rn);
	kvfree(old);
}

/* Tailroom the program's push_vlan ops may need (4 bytes each, per rule). */
static u32 rs_push_room(const u8 *prog)
{
	u32 n = get_unaligned_le16(prog + 8), off = RS_HDR_LEN, most = 0, i, j;

	for (i = 0; i < n; i++) {
		const u8 *r = prog + off;
		u32 ops = r[4] + r[5], at = RS_RULE_HDR_LEN, pushes = 0;

		for (j = 0; j < ops; j++) {
			pushes += r[at] == RS_A_PUSH_VLAN;
			at += RS_OP_HDR_LEN + r[at + 1];
		}
		most = max(most, pushes);
		off += get_unaligned_le16(r);
	}
	return most * VLAN_HLEN;
}

static int rs_port(struct net *net, struct nlattr *attr,
		   int *ifindex, struct netlink_ext_ack *extack)
{
	struct net_device *dev;
	int err = 0;

	rcu_read_lock();
	dev = dev_get_by_name_rcu(net, nla_data(attr));
	if (!dev) {
		NL_SET_ERR_MSG_ATTR(extack, attr, "no such interface");
		err = -ENODEV;
	} else if (!netif_is_bridge_port(dev)) {
		NL_SET_ERR_MSG_ATTR(extack, attr, "interface is not a bridge port");
		err = -EINVAL;
	} else {
		*ifindex = dev->ifindex;
	}
	rcu_read_unlock();
	return err;
}

static int rs_cmd_load(struct sk_buff *skb, struct genl_info *info)
{
	struct rs_net *rn = net_generic(genl_info_net(info), rs_net_id);
	struct netlink_ext_ack *extack = info->extack;
	struct nlattr **a = info->attrs;
	int ifindex[2], err;
	u32 len, state_size;
	struct rs_prog *p;
	const u8 *prog;

	if (!a[RESHAPER_A_PROGRAM] || !a[RESHAPER_A_PORT_A] || !a[RESHAPER_A_PORT_B]) {
		NL_SET_ERR_MSG(extack, "a program and both ports are required");
		return -EINVAL;
	}
	prog = nla_data(a[RESHAPER_A_PROGRAM]);
	len = nla_len(a[RESHAPER_A_PROGRAM]);
	err = rs_program_verify(prog, len, &state_size);
	if (err) {
		NL_SET_BAD_ATTR(extack, a[RESHAPER_A_PROGRAM]);
		extack->_msg = rs_verify_strerror(-err);	/* a string literal of engine.c */
		return -EINVAL;
	}
	if (state_size > RS_MAX_STATE) {
		NL_SET_ERR_MSG_ATTR(extack, a[RESHAPER_A_PROGRAM],
				    "program state too large (rate limits)");
		return -E2BIG;
	}
	err = rs_port(genl_info_net(info), a[RESHAPER_A_PORT_A], &ifindex[0], extack) ?:
	      rs_port(genl_info_net(info), a[RESHAPER_A_PORT_B], &ifindex[1], extack);
	if (err)
		return err;
	if (ifindex[0] == ifindex[1]) {
		NL_SET_ERR_MSG_ATTR(extack, a[RESHAPER_A_PORT_B], "ports a and b are the same interface");
		return -EINVAL;
	}

	/* charged to the caller's memory cgroup: a program's state can be large */
	p = kvzalloc(struct_size(p, code, ALIGN(len, 8) + state_size), GFP_KERNEL_ACCOUNT);
	if (!p)
		return -ENOMEM;
	spin_lock_init(&p->lock);
	memcpy(p->code, prog, len);
	p->len = len;
	p->state = p->code + ALIGN(len, 8);
	p->state_size = state_size;
	p->ifindex[0] = ifindex[0];
	p->ifindex[1] = ifindex[1];
	p->grow = rs_push_room(p->code);
	rs_state_init(p->code, len, p->state, state_size,
		      a[RESHAPER_A_SEED] ? nla_get_u64(a[RESHAPER_A_SEED]) : 0);
	rs_prog_replace(rn, p);
	return 0;
}

static int rs_cmd_clear(struct sk_buff *skb, struct genl_info *info)
{
	rs_prog_replace(net_generic(genl_info_net(info), rs_net_id), NULL);
	return 0;
}

static int rs_cmd_get_stats(struct sk_buff *skb, struct genl_info *info)
{
	struct rs_net *rn = net_generic(genl_info_net(info), rs_net_id);
	struct rs_prog *p = rs_prog_get(rn);
	struct nlattr *st = NULL, *ps = NULL;
	size_t state_len = 0;
	struct sk_buff *msg;
	void *hdr;

	if (p)
		state_len = sizeof(struct rs_state) +
			    ((struct rs_state *)p->state)->n_rules * sizeof(struct rs_rule_state);
	msg = genlmsg_new(nla_total_size(state_len) + 256, GFP_KERNEL);
	if (!msg)
		return -ENOMEM;
	hdr = genlmsg_put_reply(msg, info, &rs_family, 0, RESHAPER_CMD_GET_STATS);
	if (!hdr)
		goto nospace;
	if (p) {
		if (nla_put_u32(msg, RESHAPER_A_PROGRAM_LEN, p->len))
			goto nospace;
		st = nla_reserve(msg, RESHAPER_A_STATE, state_len);
		ps = nla_reserve(msg, RESHAPER_A_PORT_STATS, sizeof(p->port));
		if (!st || !ps)
			goto nospace;
		spin_lock_bh(&p->lock);
		memcpy(nla_data(st), p->state, state_len);
		memcpy(nla_data(ps), p->port, sizeof(p->port));
		spin_unlock_bh(&p->lock);
	}
	spin_lock_bh(&rn->qlock);
	if (nla_put_u32(msg, RESHAPER_A_QUEUED, skb_queue_len(&rn->queue)) ||
	    nla_put_u64_64bit(msg, RESHAPER_A_QUEUE_DROPS, rn->queue_drops, RESHAPER_A_PAD)) {
		spin_unlock_bh(&rn->qlock);
		goto nospace;
	}
	spin_unlock_bh(&rn->qlock);
	genlmsg_end(msg, hdr);
	return genlmsg_reply(msg, info);

nospace:
	nlmsg_free(msg);
	return -EMSGSIZE;
}

static const struct nla_policy rs_policy[RESHAPER_A_MAX + 1] = {
	[RESHAPER_A_PROGRAM]	= { .type = NLA_BINARY },	/* the verifier checks it */
	[RESHAPER_A_PORT_A]	= { .type = NLA_NUL_STRING, .len = IFNAMSIZ - 1 },
	[RESHAPER_A_PORT_B]	= { .type = NLA_NUL_STRING, .len = IFNAMSIZ - 1 },
	[RESHAPER_A_SEED]	= { .type = NLA_U64 },
};

/*
 * CAP_NET_ADMIN in the initial user namespace (GENL_ADMIN_PERM), not in the namespace's
 * owner (GENL_UNS_ADMIN_PERM): root of an unprivileged user namespace must not load
 * programs (up to RS_MAX_STATE each) or steal RS_QUEUE_LIMIT skbs per namespace it makes.
 */
static const struct genl_small_ops rs_ops[] = {
	{ .cmd = RESHAPER_CMD_LOAD, .doit = rs_cmd_load, .flags = GENL_ADMIN_PERM },
	{ .cmd = RESHAPER_CMD_CLEAR, .doit = rs_cmd_clear, .flags = GENL_ADMIN_PERM },
	{ .cmd = RESHAPER_CMD_GET_STATS, .doit = rs_cmd_get_stats, .flags = GENL_ADMIN_PERM },
};

static struct genl_family rs_family __ro_after_init = {
	.name		= RESHAPER_GENL_NAME,
	.version	= RESHAPER_GENL_VERSION,
	.maxattr	= RESHAPER_A_MAX,
	.policy		= rs_policy,
	.netnsok	= true,
	.module		= THIS_MODULE,
	.small_ops	= rs_ops,
	.n_small_ops	= ARRAY_SIZE(rs_ops),
	.resv_start_op	= RESHAPER_CMD_MAX + 1,
};

/* ---- per namespace ---------------------------------------------------------------- */

static int __net_init rs_net_init(struct net *net)
{
	struct rs_net *rn = net_generic(net, rs_net_id);

	rn->net = net;
	spin_lock_init(&rn->qlock);
	__skb_queue_head_init(&rn->queue);
	hrtimer_init(&rn->timer, CLOCK_MONOTONIC, HRTIMER_MODE_ABS_SOFT);
	rn->timer.function = rs_timer;
	return nf_register_net_hook(net, &rs_nf_ops);
}

static void __net_exit rs_net_exit(struct net *net)
{
	struct rs_net *rn = net_generic(net, rs_net_id);

	nf_unregister_net_hook(net, &rs_nf_ops);	/* waits for running hooks */
	rs_purge(rn);
	hrtimer_cancel(&rn->timer);	/* waits for a running callback */
	rs_purge(rn);
	/* no hook and no operation can see it any more */
	kvfree(rcu_dereference_protected(rn->prog, true));
	RCU_INIT_POINTER(rn->prog, NULL);
}

static int rs_netdev_event(struct notifier_block *nb, unsigned long event, void *ptr)
{
	struct net_device *dev = netdev_notifier_info_to_dev(ptr);

	if (event == NETDEV_UNREGISTER)
		rs_flush_dev(net_generic(dev_net(dev), rs_net_id), dev);
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

	BUILD_BUG_ON(sizeof(struct rs_skb_cb) > sizeof_field(struct sk_buff, cb));
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
