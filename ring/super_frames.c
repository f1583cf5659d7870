// SPDX-License-Identifier: GPL-2.0 OR MIT
/*
 * Ring mode's super-frames. A veth or tap peer with TSO/GSO on (their default,
 * so every container and VM) hands over whole TCP or UDP segments of up to
 * 64 KB, which no Ethernet wire carries. The sockets take PACKET_VNET_HDR: a
 * struct virtio_net_hdr comes before every frame, saying how the kernel would
 * cut it (gso_type, gso_size) and where its partial checksum is. Ring slots
 * stay sized for the MTU: a longer frame lands in its slot cut short, marked
 * TP_STATUS_COPY, and whole on the socket's queue (PACKET_COPY_THRESH), read
 * with recvmsg in ring order (link.c). Then one of two ways:
 *  - the rules run once on the super-frame when none of them can tell its
 *    segments apart or treats frames one by one (only header rewrites, drops
 *    and matches on fields every segment shares: rs_wire_frames_needed), and
 *    it leaves whole through a second socket with its virtio_net_hdr, for the
 *    kernel or the NIC to cut: 45 segments for the price of one frame;
 *  - otherwise (loss, delay, rate, duplicate, corrupt, payload, truncate,
 *    length or byte matches, hooks) it is cut here first, as the wire would
 *    carry it (netem does the same when it corrupts), and every segment runs
 *    the rules as a frame of its own.
 * Either way the counters count wire frames. (iperf3 TCP over veth here: 17
 * Gbit/s whole, 1.9 cut, where the kernel then carries 45 times the frames;
 * 19 through a Linux bridge.)
 */
#include <errno.h>
#include <string.h>
#include <arpa/inet.h>
#include <linux/if_ether.h>
#include <linux/tcp.h>
#include <sys/socket.h>
#include <sys/uio.h>

#include "ring_internal.h"

#ifndef VIRTIO_NET_HDR_GSO_UDP_L4
#define VIRTIO_NET_HDR_GSO_UDP_L4 5 /* UDP_SEGMENT super-frames (Linux >= 6.2); Debian 12's headers predate it */
#endif
#define TCP_FLAGS(f) ((uint8_t)(ntohl(f) >> 16)) /* linux/tcp.h's TCP_FLAG_* as the flags byte */
#define TCP_CSUM_OFF 16            /* the checksum field in the TCP header */
#define UDP_CSUM_OFF 6
#define UDP_HLEN     8

/*
 * Whether a rule of this (verified) program could tell a super-frame from its
 * segments, or acts frame by frame, so that super-frames must be cut before
 * the rules: matches on the length, on bytes (payload, lengths, sequence
 * numbers differ from segment to segment), on the TCP flags the cutting moves
 * (FIN and PSH go to the last segment, CWR stays on the first), and every
 * action but header rewrites and drops, and schedules. *push_room: the most
 * bytes push_vlan adds in one rule (the engine refuses a push past RS_MAX_FRAME).
 */
int rs_wire_frames_needed(const uint8_t *prog, uint32_t len, uint32_t *push_room)
{
	uint32_t off = RS_HDR_LEN, n = (uint32_t)prog[8] | (uint32_t)prog[9] << 8, i, k, o;
	int wire = 0;

	*push_room = rs_program_push_room(prog);
	for (i = 0; i < n && off + RS_RULE_HDR_LEN <= len; i++) {
		const uint8_t *r = prog + off;

		/* a schedule's phases act frame by frame on when each frame arrives */
		wire |= (r[3] & RS_RF_SCHEDULE) != 0;
		for (k = 0, o = RS_RULE_HDR_LEN; k < (uint32_t)r[4] + r[5]; k++, o += RS_OP_HDR_LEN + r[o + 1]) {
			const uint8_t *a = r + o + RS_OP_HDR_LEN;

			switch (r[o]) {
			case RS_M_ETH: case RS_M_HAS_VLAN: case RS_M_IP:
			case RS_A_SET_ETH: case RS_A_SET_IP: case RS_A_SET_FIELD: case RS_A_DEC_TTL:
			case RS_A_POP_VLAN: case RS_A_DROP: case RS_A_PUSH_VLAN:
				break;
			case RS_M_RANGE:
				wire |= a[0] == RS_F_LENGTH;
				break;
			case RS_M_TCP_FLAGS:
				wire |= (a[0] & (TCP_FLAGS(TCP_FLAG_FIN) | TCP_FLAGS(TCP_FLAG_PSH) |
						 TCP_FLAGS(TCP_FLAG_CWR))) != 0;
				break;
			default:
				wire = 1;
			}
		}
		off += (uint32_t)r[0] | (uint32_t)r[1] << 8;
	}
	return wire;
}

/* A super-frame in fw->work, as the rules see it: its headers and how it is cut. */
struct rs_gso {
	uint32_t type;          /* VIRTIO_NET_HDR_GSO_TCPV4, _TCPV6 or _UDP_L4, with the _ECN bit */
	uint32_t mss;           /* payload bytes of each segment but the last (gso_size) */
	uint32_t l3, l4, hdr;   /* offsets of the IP header, the TCP/UDP header, the payload */
	uint32_t ck;            /* offset of the TCP/UDP checksum in the L4 header */
	uint32_t segs;
	int partial;            /* the checksum field holds the pseudo-header sum only (NEEDS_CSUM) */
};

static uint32_t csum_fold(uint32_t s)
{
	while (s >> 16)
		s = (s & 0xffff) + (s >> 16);
	return s;
}

/* The ones' complement sum of n bytes (n even) as 16-bit big-endian words, folded. */
static uint32_t csum_sum(const uint8_t *p, uint32_t n)
{
	uint32_t s = 0, i;

	for (i = 0; i + 1 < n; i += 2)
		s += rs_get_be16(p + i);
	return csum_fold(s);
}

/*
 * Reads the super-frame's headers; shift is how far the rules' view of the frame
 * moved its start against the kernel's (an inner tag put back +4, a port tag
 * taken out -4), which virtio_net_hdr's offsets count from. 0, or -1 for a kind
 * not cut here (the kernel only describes TCPv4, TCPv6 and UDP_L4 ones).
 */
static int gso_parse(const uint8_t *w, uint32_t len, const struct virtio_net_hdr *vh, int shift,
		     struct rs_gso *g)
{
	uint32_t type = vh->gso_type & ~VIRTIO_NET_HDR_GSO_ECN, et, proto, i;
	int tcp = type == VIRTIO_NET_HDR_GSO_TCPV4 || type == VIRTIO_NET_HDR_GSO_TCPV6;

	if (!tcp && type != VIRTIO_NET_HDR_GSO_UDP_L4)
		return -1;
	g->type = vh->gso_type;
	g->mss = vh->gso_size;
	g->partial = (vh->flags & VIRTIO_NET_HDR_F_NEEDS_CSUM) != 0;
	g->ck = tcp ? TCP_CSUM_OFF : UDP_CSUM_OFF;
	/* the IP header: after the MACs and the inner tags the rules see */
	g->l3 = 12;
	et = rs_get_be16(w + 12);
	for (i = 0; i < 2 && (et == ETH_P_8021Q || et == ETH_P_8021AD) && g->l3 + 8 <= len; i++) {
		g->l3 += VLAN_HLEN;
		et = rs_get_be16(w + g->l3);
	}
	g->l3 += 2;
	if (et == ETH_P_IP && g->l3 + 20 <= len && w[g->l3] >> 4 == 4 && (w[g->l3] & 0xf) >= 5) {
		proto = w[g->l3 + 9];
		g->l4 = g->l3 + (uint32_t)(w[g->l3] & 0xf) * 4;
	} else if (et == ETH_P_IPV6 && g->l3 + 40 <= len && w[g->l3] >> 4 == 6) {
		proto = w[g->l3 + 6];
		g->l4 = g->l3 + 40;
	} else {
		return -1;
	}
	if (tcp && (type == VIRTIO_NET_HDR_GSO_TCPV4) != (et == ETH_P_IP))
		return -1;
	if (g->partial) {
		/* the kernel's word on where L4 starts (past any IPv6 extension headers) */
		if (vh->csum_start + shift < (int)g->l4 || vh->csum_offset != g->ck)
			return -1;
		g->l4 = (uint32_t)(vh->csum_start + shift);
	} else if (proto != (tcp ? IPPROTO_TCP : IPPROTO_UDP)) {
		return -1;
	}
	if (g->l4 + (tcp ? 20 : UDP_HLEN) > len)
		return -1;
	g->hdr = g->l4 + (tcp ? (uint32_t)(w[g->l4 + 12] >> 4) * 4 : UDP_HLEN);
	if (!g->mss || g->hdr >= len || (tcp && g->hdr < g->l4 + 20))
		return -1;
	g->segs = (len - g->hdr + g->mss - 1) / g->mss;
	return 0;
}

/*
 * Cuts the super-frame in fw->work into the frames the wire would carry, as the
 * kernel's GSO does: lengths, IPv4 IDs counting up, sequence numbers, FIN/PSH
 * on the last segment and CWR on the first only, checksums computed whole.
 * Each then meets the rules as a frame of its own.
 */
static void cut_and_forward(struct rs_forwarder *fw, int port, uint32_t pcp, uint64_t now,
			    const struct rs_gso *g, uint32_t len)
{
	struct rs_port_stats *ps = &fw->st.port[port];
	const uint8_t *w = fw->work;
	uint8_t *s = fw->seg;
	int v4 = w[g->l3] >> 4 == 4, tcp = g->ck == TCP_CSUM_OFF;
	uint32_t id = v4 ? rs_get_be16(w + g->l3 + 4) : 0, off, n, i, slen;
	uint32_t seq = tcp ? (uint32_t)rs_get_be16(w + g->l4 + 4) << 16 | rs_get_be16(w + g->l4 + 6) : 0;

	for (i = 0, off = g->hdr; off < len; i++, off += n) {
		n = len - off < g->mss ? len - off : g->mss;
		slen = g->hdr + n;
		memcpy(s, w, g->hdr);
		memcpy(s + g->hdr, w + off, n);
		if (v4) {
			rs_put_be16(s + g->l3 + 2, slen - g->l3);
			rs_put_be16(s + g->l3 + 4, id + i);
			rs_put_be16(s + g->l3 + 10, 0);
			rs_put_be16(s + g->l3 + 10, ~csum_sum(s + g->l3, (uint32_t)(s[g->l3] & 0xf) * 4) & 0xffff);
		} else {
			rs_put_be16(s + g->l3 + 4, slen - g->l3 - 40);
		}
		if (tcp) {
			uint32_t q = seq + i * g->mss;

			rs_put_be16(s + g->l4 + 4, q >> 16);
			rs_put_be16(s + g->l4 + 6, q);
			if (off + n < len)
				s[g->l4 + 13] &= (uint8_t)~(TCP_FLAGS(TCP_FLAG_FIN) | TCP_FLAGS(TCP_FLAG_PSH));
			if (i)
				s[g->l4 + 13] &= (uint8_t)~TCP_FLAGS(TCP_FLAG_CWR);
		} else {
			rs_put_be16(s + g->l4 + 4, slen - g->l4);
		}
		ps->csum_completed += (uint64_t)rs_csum_complete(s, slen, 0);
		ps->rx++;
		ps->rx_bytes += slen;
		rs_forward_frame(fw, port, s, slen, pcp, now);
	}
}

/*
 * The super-frame's L4 checksum is partial: the field holds the pseudo-header
 * sum P, to which the kernel or the NIC adds the segment's bytes when it cuts.
 * The engine updates a checksum field incrementally (RFC 1624) as a complete
 * one, ~(sum): on P that moves it the wrong way for an address (pseudo-header)
 * and at all for a port (the segment's bytes are summed later anyway). So the
 * field goes to the engine as the complete checksum of the pseudo-header and
 * the L4 header alone, ~(P + H) (header rewrites never touch the payload), and
 * comes back as P = ~F - H, with H summed again over the rewritten header.
 */
static uint32_t l4_header_sum(const uint8_t *w, const struct rs_gso *g)
{
	/* the checksum field counts as 0: take it back out */
	return csum_fold(csum_sum(w + g->l4, g->hdr - g->l4) + (~rs_get_be16(w + g->l4 + g->ck) & 0xffff));
}

static void partial_to_complete(uint8_t *w, const struct rs_gso *g)
{
	uint32_t c = ~csum_fold(rs_get_be16(w + g->l4 + g->ck) + l4_header_sum(w, g)) & 0xffff;

	/* 0xffff, the other zero: a UDP checksum of 0 means "none" to the engine, which leaves it */
	rs_put_be16(w + g->l4 + g->ck, c ? c : 0xffff);
}

static void complete_to_partial(uint8_t *w, const struct rs_gso *g)
{
	uint32_t f = rs_get_be16(w + g->l4 + g->ck);

	rs_put_be16(w + g->l4 + g->ck, csum_fold((~f & 0xffff) + (~l4_header_sum(w, g) & 0xffff)));
}

/*
 * The engine ran once on a super-frame of g->segs wire frames: make its counters
 * what as many runs on the segments would have left. Only the global counters
 * and those of the rule that matched can have moved; bytes become the segments'.
 */
static void count_as_segments(struct rs_forwarder *fw, const struct rs_counters *before, int32_t rule,
			      uint32_t segs, uint64_t seg_bytes)
{
	struct rs_state *st = fw->state;
	uint64_t *now = (uint64_t *)&st->counters;
	const uint64_t *was = (const uint64_t *)before;
	uint32_t i;

	for (i = 0; i < sizeof(*before) / sizeof(uint64_t); i++)
		now[i] += (now[i] - was[i]) * (segs - 1);
	if (rule >= 0 && (uint32_t)rule < st->n_rules) {
		struct rs_rule_state *rs = (struct rs_rule_state *)(st + 1) + rule, *old = &fw->snap;
		uint64_t *n = &rs->matched;
		const uint64_t *o = &old->matched;

		/* the counters come first, up to the timing state */
		for (i = 0; i < offsetof(struct rs_rule_state, last_departure) / sizeof(uint64_t); i++)
			n[i] += (n[i] - o[i]) * (segs - 1);
		rs->bytes = old->bytes + seg_bytes;
	}
}

/* Sends a super-frame whole out of port out, the port's tag added in trunk form, for the kernel to cut. */
static void emit_whole(struct rs_forwarder *fw, int out, const uint8_t *f, uint32_t len, uint32_t pcp,
		       const struct rs_gso *g)
{
	struct rs_link *l = &fw->link[fw->port_link[out]];
	struct rs_port_stats *ps = &fw->st.port[out];
	uint32_t vlan = fw->vlan[out], add = vlan ? VLAN_HLEN : 0;
	uint8_t tag[VLAN_HLEN] = { ETH_P_8021Q >> 8, ETH_P_8021Q & 0xff, (uint8_t)(pcp << 5 | vlan >> 8),
				   (uint8_t)vlan };
	struct virtio_net_hdr vh = {
		.flags = VIRTIO_NET_HDR_F_NEEDS_CSUM, .gso_type = (uint8_t)g->type,
		.hdr_len = (uint16_t)(g->hdr + add), .gso_size = (uint16_t)g->mss,
		.csum_start = (uint16_t)(g->l4 + add), .csum_offset = (uint16_t)g->ck,
	};
	struct iovec iov[4] = {
		{ &vh, VNET_HLEN }, { (void *)f, 12 }, { tag, add }, { (void *)(f + 12), len - 12 },
	};
	struct msghdr msg = { .msg_iov = iov, .msg_iovlen = 4 };

	/* each segment as a Linux device checks a frame: MTU + Ethernet header + one tag */
	if (g->hdr + g->mss > fw->mtu[out] + ETH_HLEN + VLAN_HLEN) {
		ps->oversize += g->segs;
		return;
	}
	/* the frames before it in the TX ring leave first */
	rs_link_kick(fw, l);
	if (sendmsg(l->gso_fd, &msg, MSG_DONTWAIT) < 0) {
		if (errno == EAGAIN || errno == ENOBUFS)
			ps->tx_full += g->segs;
		else
			ps->tx_errors++;
		return;
	}
	ps->gso_tx++;
	ps->tx += g->segs;
	ps->tx_bytes += len + add + (uint64_t)(g->segs - 1) * (g->hdr + add);
}

/* The rules once on a super-frame whose segments none of them could tell apart (fw->cut is 0). */
static void forward_whole(struct rs_forwarder *fw, int port, uint32_t pcp, uint64_t now, struct rs_gso *g,
			  uint32_t len)
{
	struct rs_port_stats *ps = &fw->st.port[port];
	struct rs_state *st = fw->state;
	uint8_t *w = fw->work;
	uint64_t seg_bytes = len + (uint64_t)(g->segs - 1) * g->hdr;
	struct rs_counters before = st->counters;
	struct rs_verdict v;
	int32_t shift, rule;

	ps->rx += g->segs;
	ps->rx_bytes += seg_bytes;
	partial_to_complete(w, g);
	/* only the rule the frame meets changes: its counters alone are kept (the rules' states follow
	 * struct rs_state, rs_program.h), whatever the number of rules */
	rule = rs_rule_for(fw->state, w, len, (uint32_t)port + 1, 0);
	if (rule >= 0)
		fw->snap = ((struct rs_rule_state *)(st + 1))[rule];
	rs_run_frame(fw, port, w, len, now, &v);
	count_as_segments(fw, &before, rule == v.rule ? v.rule : -1, g->segs, seg_bytes);
	if (v.verdict != RS_V_FORWARD)
		return;
	/* push_vlan and pop_vlan move the headers; nothing else here changes the length */
	shift = (int32_t)v.len - (int32_t)len;
	g->l3 += (uint32_t)shift;
	g->l4 += (uint32_t)shift;
	g->hdr += (uint32_t)shift;
	complete_to_partial(w, g);
	emit_whole(fw, port ^ 1, w, v.len, pcp, g);
}

/* A super-frame in fw->work (len bytes, shift as for gso_parse): cut, or whole when the rules allow. */
void rs_forward_super_frame(struct rs_forwarder *fw, int port, uint32_t pcp, uint64_t now,
			    const struct virtio_net_hdr *vh, int shift, uint32_t len)
{
	struct rs_port_stats *ps = &fw->st.port[port];
	struct rs_gso g;

	ps->gso_rx++;
	if (gso_parse(fw->work, len, vh, shift, &g)) {
		ps->oversize++;
		return;
	}
	/* whole only with its partial checksum to keep, and room for the rules' push_vlan */
	if (fw->cut || !g.partial || len + fw->push_room > RS_MAX_FRAME)
		cut_and_forward(fw, port, pcp, now, &g, len);
	else
		forward_whole(fw, port, pcp, now, &g, len);
}
