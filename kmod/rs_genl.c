// SPDX-License-Identifier: GPL-2.0
/*
 * Control: the generic netlink family "reshaper" (reshaper_genl.h). LOAD
 * checks what it is given (both ports are bridge ports, the program passes
 * the engine's verifier, its state is not too large) before the program
 * replaces the namespace's old one; CLEAR removes it; GET_STATS dumps the
 * engine's state and the counters. Every operation needs CAP_NET_ADMIN in
 * the initial user namespace.
 */
#include <linux/if_vlan.h>
#include <linux/mm.h>
#include <net/sock.h>
#include <asm/unaligned.h>

#include "rs_kmod.h"
#include "rs_program.h"		/* the engine's API: rs_engine.c builds engine.c */

#define RS_MAX_STATE	 (64u << 20)		/* rate queues can ask for a lot */

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
	struct rs_net *rn = rs_pernet(genl_info_net(info));
	struct netlink_ext_ack *extack = info->extack;
	struct nlattr **a = info->attrs;
	int ifindex[2], err;
	u32 len, state_size;
	struct rs_prog *p, *old;
	const u8 *prog;
	u64 now;

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
	p->grow = rs_program_push_room(p->code);
	p->gen = ++rn->loads;	/* a GET_STATS dump sees that its program was replaced */
	rs_state_init(p->code, len, p->state, state_size,
		      a[RESHAPER_A_SEED] ? nla_get_u64(a[RESHAPER_A_SEED]) : 0);
	/* schedules count from now; keep_time ones from the first load, which a reload keeps */
	now = ktime_get_ns();
	old = rs_prog_get(rn);
	rs_state_start(p->state, now, old ? ((struct rs_state *)old->state)->epoch_first : now);
	rs_prog_replace(rn, p);
	return 0;
}

static int rs_cmd_clear(struct sk_buff *skb, struct genl_info *info)
{
	rs_prog_replace(rs_pernet(genl_info_net(info)), NULL);
	return 0;
}

/*
 * GET_STATS is a dump (reshaper_genl.h): one state of RS_MAX_RULES rules is ~131 KB, and a
 * reply of that size would need one order-6 linear skb, which a fragmented board's memory
 * may refuse. A dump fills the skbs netlink hands it (NLMSG_GOODSIZE, at most 32 KB), one
 * message each: the first carries the program length, the port counters, the queue and the
 * state from its start (struct rs_state) with the whole rules that fit; each next message
 * the whole rules that fit after those. Within a message the counters are one snapshot
 * (copied under p->lock); a later message is a later one, so counts across messages may
 * differ by the frames counted in between. cb->args (a long each, as gen) keep the
 * position between calls:
 */
#define RS_DUMP_GEN	0	/* the dumped program's gen, 0 if none was loaded */
#define RS_DUMP_LEFT	1	/* bytes of its state not sent yet */
#define RS_DUMP_STARTED	2	/* the first message has gone */

static u32 rs_state_len(const struct rs_prog *p)
{
	return sizeof(struct rs_state) +
	       ((const struct rs_state *)p->state)->n_rules * sizeof(struct rs_rule_state);
}

/*
 * The next piece of p's state: struct rs_state first (sent == 0), then whole rules, so
 * that a rule's counters are one snapshot; as many as the skb and one attribute (16-bit
 * length) hold, and at least one while any is left, so that every message makes progress.
 */
static struct nlattr *rs_put_piece(struct sk_buff *skb, const struct rs_prog *p, u32 sent)
{
	u32 head = sent ? 0 : sizeof(struct rs_state), each = sizeof(struct rs_rule_state);
	int room = min_t(int, skb_tailroom(skb) - NLA_HDRLEN, U16_MAX - NLA_HDRLEN) & ~(NLA_ALIGNTO - 1);
	u32 rules = (rs_state_len(p) - sent - head) / each;

	if (room < (int)(head + (rules ? each : 0)))
		return NULL;
	rules = min(rules, (room - head) / each);
	return nla_reserve(skb, RESHAPER_A_STATE, head + rules * each);
}

static int rs_put_first(struct sk_buff *skb, struct rs_net *rn, struct rs_prog *p,
			struct nlattr **st)
{
	struct nlattr *ps;

	spin_lock_bh(&rn->qlock);
	if (nla_put_u32(skb, RESHAPER_A_QUEUED, skb_queue_len(&rn->queue)) ||
	    nla_put_u64_64bit(skb, RESHAPER_A_QUEUE_DROPS, rn->queue_drops, RESHAPER_A_PAD)) {
		spin_unlock_bh(&rn->qlock);
		return -EMSGSIZE;
	}
	spin_unlock_bh(&rn->qlock);
	if (!p)
		return 0;
	if (nla_put_u32(skb, RESHAPER_A_PROGRAM_LEN, p->len))
		return -EMSGSIZE;
	ps = nla_reserve(skb, RESHAPER_A_PORT_STATS, sizeof(p->port));
	*st = ps ? rs_put_piece(skb, p, 0) : NULL;
	if (!*st)
		return -EMSGSIZE;
	spin_lock_bh(&p->lock);
	memcpy(nla_data(*st), p->state, nla_len(*st));
	memcpy(nla_data(ps), p->port, sizeof(p->port));
	spin_unlock_bh(&p->lock);
	return 0;
}

static int rs_dump_stats(struct sk_buff *skb, struct netlink_callback *cb)
{
	struct rs_net *rn = rs_pernet(sock_net(skb->sk));
	struct rs_prog *p = rs_prog_get(rn);	/* dumps of a family without parallel_ops hold genl_mutex */
	unsigned long *args = cb->args;
	struct nlattr *st = NULL;
	u32 sent = 0;
	void *hdr;
	int err;

	if (args[RS_DUMP_STARTED]) {
		if (!args[RS_DUMP_LEFT])
			return 0;	/* all sent */
		if (!p || p->gen != args[RS_DUMP_GEN]) {
			/* the reader would join the states of two programs */
			NL_SET_ERR_MSG(cb->extack, "the program changed during the dump: ask again");
			return -EAGAIN;
		}
		sent = rs_state_len(p) - args[RS_DUMP_LEFT];
	}
	hdr = genlmsg_put(skb, NETLINK_CB(cb->skb).portid, cb->nlh->nlmsg_seq,
			  &rs_family, NLM_F_MULTI, RESHAPER_CMD_GET_STATS);
	if (!hdr)
		return -EMSGSIZE;
	if (!args[RS_DUMP_STARTED]) {
		err = rs_put_first(skb, rn, p, &st);
	} else {
		st = rs_put_piece(skb, p, sent);
		err = st ? 0 : -EMSGSIZE;
		if (st) {
			spin_lock_bh(&p->lock);
			memcpy(nla_data(st), p->state + sent, nla_len(st));
			spin_unlock_bh(&p->lock);
		}
	}
	if (err) {
		genlmsg_cancel(skb, hdr);
		return err;
	}
	genlmsg_end(skb, hdr);
	if (!args[RS_DUMP_STARTED]) {
		args[RS_DUMP_STARTED] = 1;
		args[RS_DUMP_GEN] = p ? p->gen : 0;
		args[RS_DUMP_LEFT] = p ? rs_state_len(p) : 0;
	}
	args[RS_DUMP_LEFT] -= st ? nla_len(st) : 0;
	return skb->len;
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
 * programs (up to RS_MAX_STATE each) or steal RS_QUEUE_LIMIT (rs_queue.c) skbs per
 * namespace it makes.
 */
static const struct genl_small_ops rs_ops[] = {
	{ .cmd = RESHAPER_CMD_LOAD, .doit = rs_cmd_load, .flags = GENL_ADMIN_PERM },
	{ .cmd = RESHAPER_CMD_CLEAR, .doit = rs_cmd_clear, .flags = GENL_ADMIN_PERM },
	{ .cmd = RESHAPER_CMD_GET_STATS, .dumpit = rs_dump_stats, .flags = GENL_ADMIN_PERM },
};

struct genl_family rs_family __ro_after_init = {
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
