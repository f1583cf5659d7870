// SPDX-License-Identifier: GPL-2.0
/*
 * The netfilter hook and the program it runs. One hook per network namespace
 * at NF_BR_POST_ROUTING: a frame the bridge forwards from port a to port b
 * (or back) goes to rs_frame.c; every other frame passes untouched. The
 * namespace's program is replaced under RCU (rs_genl.c asks for it).
 */
#include <linux/mm.h>
#include <linux/netfilter_bridge.h>

#include "rs_kmod.h"
#include "rs_program.h"		/* RS_PORT_A, RS_PORT_B */

static unsigned int rs_hook(void *priv, struct sk_buff *skb,
			    const struct nf_hook_state *state)
{
	struct rs_net *rn = rs_pernet(state->net);
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

const struct nf_hook_ops rs_nf_ops = {
	.hook		= rs_hook,
	.pf		= NFPROTO_BRIDGE,
	.hooknum	= NF_BR_POST_ROUTING,
	.priority	= NF_BR_PRI_LAST,
};

struct rs_prog *rs_prog_get(struct rs_net *rn)
{
	return rcu_dereference_protected(rn->prog, 1);	/* under genl_mutex */
}

/*
 * Swaps the program; after the grace period no hook uses the old one. Frames already
 * delayed (by either program: a hook may run the new one before the grace period ends)
 * hold nothing of a program and leave at the time they were given; when the program
 * is cleared, they leave at once.
 */
void rs_prog_replace(struct rs_net *rn, struct rs_prog *p)
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
