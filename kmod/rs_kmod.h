/* SPDX-License-Identifier: GPL-2.0 */
/*
 * What the module's files share: the per-namespace state, the loaded program,
 * and the functions one file calls in another. Private to the module; user
 * space reads only reshaper_genl.h.
 *
 * Locking: genl_mutex serialises the operations (the family is not
 * parallel_ops). rs_run() keeps its state (PRNG, counters, timing) in the
 * program, so one spinlock per program serialises the engine: simple, and
 * a bottleneck on many cores (first version).
 */
#ifndef RS_KMOD_H
#define RS_KMOD_H

#include <linux/types.h>
#include <linux/spinlock.h>
#include <linux/skbuff.h>
#include <linux/hrtimer.h>
#include <linux/netdevice.h>
#include <linux/netfilter.h>
#include <net/genetlink.h>
#include <net/net_namespace.h>
#include <net/netns/generic.h>

#include "reshaper_genl.h"

struct rs_prog {
	spinlock_t lock;	/* the engine state and the port counters */
	int ifindex[2];		/* port a, port b */
	u32 len, state_size;
	u32 grow;		/* tailroom push_vlan may need */
	unsigned long gen;	/* which LOAD of the namespace made it (rs_net.loads) */
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
	unsigned long loads;		/* programs loaded so far, under genl_mutex */
};

/* reshaper_main.c: registration */
extern unsigned int rs_net_id;

static inline struct rs_net *rs_pernet(const struct net *net)
{
	return net_generic(net, rs_net_id);
}

/* rs_queue.c: the delay queue */
void rs_queue_init(struct rs_net *rn);
void rs_queue_exit(struct rs_net *rn);
bool rs_enqueue(struct rs_net *rn, struct sk_buff *skb, u64 due, int ifindex);
void rs_release_all(struct rs_net *rn);
void rs_flush_dev(struct rs_net *rn, struct net_device *dev);

/* rs_frame.c: one frame (or one GSO skb) through the engine */
unsigned int rs_frame(struct rs_net *rn, struct rs_prog *p, struct sk_buff *skb,
		      const struct nf_hook_state *state, int port, bool csum_done);
unsigned int rs_gso(struct rs_net *rn, struct rs_prog *p, struct sk_buff *skb,
		    const struct nf_hook_state *state, int port);

/* rs_hook.c: the netfilter hook and the namespace's program */
extern const struct nf_hook_ops rs_nf_ops;
struct rs_prog *rs_prog_get(struct rs_net *rn);
void rs_prog_replace(struct rs_net *rn, struct rs_prog *p);

/* rs_genl.c: the generic netlink family */
extern struct genl_family rs_family;

#endif /* RS_KMOD_H */
