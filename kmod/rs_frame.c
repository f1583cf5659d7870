// SPDX-License-Identifier: GPL-2.0
/*
 * One bridged frame through the engine (the per-packet path). The frame is
 * given to the engine as it appears on its in port's VLAN interface: the
 * Ethernet header pushed back, an inner tag the receive path took into
 * skb->vlan_tci put back into the bytes, writable, linear, checksum
 * completed. The verdict is carried out here: drop, clone for duplicates,
 * and for delays the skb goes to the delay queue (rs_queue.c). A GSO skb is
 * cut into its wire frames first, each of them a frame as above (rs_gso).
 * Each frame the engine ran on is an event of the tracepoint (rs_trace.h).
 */
#include <linux/if_vlan.h>

#include "rs_kmod.h"
#include "rs_program.h"		/* the engine's API: rs_engine.c builds engine.c */
#include "rs_trace.h"

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
unsigned int rs_frame(struct rs_net *rn, struct rs_prog *p, struct sk_buff *skb,
		      const struct nf_hook_state *state, int port, bool csum_done)
{
	struct reshaper_port_stats *in_ps = &p->port[port - 1], *out_ps = &p->port[2 - port];
	int out = state->out->ifindex, i, err;
	struct rs_verdict v;
	/* not zeroed for every frame (CONFIG_INIT_STACK_ALL_ZERO): read up to caplen only */
	u8 head[RS_TRACE_HEAD] __uninitialized;
	u16 caplen = 0;		/* 0: not traced (a frame has at least its Ethernet header) */
	u32 len;

	err = rs_frame_prepare(skb, p->grow, &csum_done);
	if (err) {
		spin_lock(&p->lock);
		in_ps->errors++;
		spin_unlock(&p->lock);
		return NF_DROP;
	}
	len = skb->len;
	/* the head as it came: the engine rewrites the frame in place */
	if (trace_reshaper_frame_enabled()) {
		caplen = min_t(u32, len, RS_TRACE_HEAD);
		memcpy(head, skb->data, caplen);
	}

	spin_lock(&p->lock);
	rs_run(p->state, skb->data, len, len + skb_tailroom(skb), port, 0, ktime_get_ns(), &v);
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
	if (caplen)	/* else tracing began after the head was due: no event */
		trace_reshaper_frame(state->net, port, &v, len, head, caplen);

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
unsigned int rs_gso(struct rs_net *rn, struct rs_prog *p, struct sk_buff *skb,
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
