// SPDX-License-Identifier: GPL-2.0 OR MIT
/*
 * Ring mode's forwarder: the per-frame loop between two ports. Each turn takes
 * a batch from each link's RX ring (link.c; XDP mode: its AF_XDP socket, xsk.c), finds the frame's port, runs the
 * engine on it (rules/engine/engine.c) and does what the verdict says: out of
 * the other port's TX ring, into the delay queue (delay_queue.c), or to a
 * Python hook (hook_queue.c); super-frames go to super_frames.c. Then it
 * releases the delayed frames that are due and sleeps in ppoll until a frame
 * or a departure. Also opening, program swaps, counters and closing; ring.h is
 * the interface.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <linux/if_ether.h>
#include <sys/prctl.h>
#include <sys/socket.h>

#include "ring_internal.h"

#define BATCH        64            /* frames taken from one ring before looking at the other */
#define TX_DATA      TPACKET_ALIGN(sizeof(struct tpacket2_hdr)) /* TX V2: data after the header */
#define RX_ADDR      TPACKET_ALIGN(sizeof(struct tpacket2_hdr)) /* RX V2: sockaddr_ll after it */
#define NSEC_PER_S   1000000000ull
#define RX_STAMP_MAX_AGE_NS NSEC_PER_S /* an older receive stamp means the wall clock stepped */

static uint64_t clock_ns(clockid_t id)
{
	struct timespec ts;

	clock_gettime(id, &ts);
	return (uint64_t)ts.tv_sec * NSEC_PER_S + (uint64_t)ts.tv_nsec;
}

/*
 * Departures are timed on CLOCK_MONOTONIC: a board without a real-time clock (the
 * BeagleBone) has its wall clock stepped by NTP after boot, and a delay timed on it
 * would hold frames for the size of the step. The ring's receive stamps are wall
 * clock; each is moved onto the monotonic clock with the offset sampled beside
 * mono_now, unless a step between receipt and now makes it implausible.
 */
static void sample_clocks(struct rs_forwarder *fw)
{
	uint64_t real = clock_ns(CLOCK_REALTIME);

	fw->mono_now = clock_ns(CLOCK_MONOTONIC);
	fw->real_minus_mono = (int64_t)(real - fw->mono_now);
}

static uint64_t rx_time(const struct rs_forwarder *fw, const struct tpacket2_hdr *h)
{
	int64_t t = (int64_t)((uint64_t)h->tp_sec * NSEC_PER_S + h->tp_nsec) - fw->real_minus_mono;

	if (t <= 0 || (uint64_t)t > fw->mono_now || fw->mono_now - (uint64_t)t > RX_STAMP_MAX_AGE_NS)
		return fw->mono_now;
	return (uint64_t)t;
}

struct rs_forwarder *rs_forwarder_open(const struct rs_forwarder_config *cfg, char *err, uint32_t errlen)
{
	struct rs_forwarder *fw;
	uint32_t i;
	int p;

	if (cfg->frame_size < RS_RING_MIN_SLOT || (cfg->frame_size & (cfg->frame_size - 1)) || !cfg->ring_frames) {
		snprintf(err, errlen, "ring frame size must be a power of two >= %d", RS_RING_MIN_SLOT);
		return NULL;
	}
	fw = calloc(1, sizeof(*fw));
	if (!fw) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	fw->link[0].fd = fw->link[1].fd = fw->link[0].gso_fd = fw->link[1].gso_fd = -1;
	fw->to_py.efd = fw->from_py.efd = -1;
	for (p = 0; p < 2; p++) {
		fw->vlan[p] = cfg->vlan[p];
		fw->mtu[p] = cfg->mtu[p];
	}
	/* trunk form may put both ports on one interface: then one socket serves both */
	if (!strcmp(cfg->ifname[0], cfg->ifname[1])) {
		if (!cfg->vlan[0] || !cfg->vlan[1] || cfg->vlan[0] == cfg->vlan[1]) {
			snprintf(err, errlen, "ports on one interface need two different VLAN ids");
			goto out;
		}
		fw->nlinks = 1;
		fw->link[0].nports = 2;
		fw->link[0].port[0] = 0;
		fw->link[0].port[1] = 1;
		fw->port_link[0] = fw->port_link[1] = 0;
	} else {
		fw->nlinks = 2;
		for (p = 0; p < 2; p++) {
			fw->link[p].nports = 1;
			fw->link[p].port[0] = p;
			fw->port_link[p] = p;
		}
	}
	if (cfg->carrier == RS_CARRIER_XDP && (fw->vlan[0] || fw->vlan[1])) {
		snprintf(err, errlen, "XDP mode carries plain ports only, not a port's VLAN on a trunk");
		goto out;
	}
	for (i = 0; i < (uint32_t)fw->nlinks; i++) {
		struct rs_link *l = &fw->link[i];

		if (cfg->carrier == RS_CARRIER_XDP ? rs_xsk_open(l, cfg->ifname[i], cfg, cfg->mtu[l->port[0]], err, errlen)
						   : rs_link_open(l, cfg->ifname[i], cfg, err, errlen))
			goto out;
	}

	fw->busy_poll_ns = cfg->busy_poll_ns;
	fw->slot_size = cfg->frame_size;
	if (rs_delay_pool_open(fw, cfg->pool_frames)) {
		snprintf(err, errlen, "out of memory for %u delay buffers", fw->pool_frames);
		goto out;
	}
	if (rs_hook_queues_open(fw)) {
		snprintf(err, errlen, "out of memory or eventfds for the hook queues");
		goto out;
	}
	if (rs_trace_buffer_open(fw)) {
		snprintf(err, errlen, "out of memory for the trace buffer");
		goto out;
	}
	/* timers for delayed frames: no 50 us default slack */
	prctl(PR_SET_TIMERSLACK, 1UL, 0, 0, 0);
	return fw;
out:
	rs_forwarder_close(fw);
	return NULL;
}

void rs_forwarder_set_program(struct rs_forwarder *fw, const uint8_t *prog, uint32_t len, void *state)
{
	fw->state = state;
	fw->prog_wire = rs_wire_frames_needed(prog, len, &fw->push_room);
	fw->cut = fw->prog_wire || fw->hooks_on;
	/* rule indexes change meaning: frames still queued count for no rule now */
	fw->gen++;
	memset(fw->held, 0, sizeof(fw->held));
}

void rs_forwarder_stop(struct rs_forwarder *fw)
{
	fw->stop = 1;
}

/* The data of l's next free TX ring slot, or NULL when the ring is full even after a kick. */
static uint8_t *tx_slot(struct rs_forwarder *fw, struct rs_link *l)
{
	struct tpacket2_hdr *h;

	if (l->xsk)
		return rs_xsk_tx_slot(l);
	h = (void *)(l->tx + (size_t)l->tx_head * l->frame_size);
	if (__atomic_load_n(&h->tp_status, __ATOMIC_ACQUIRE) != TP_STATUS_AVAILABLE) {
		rs_link_kick(fw, l);
		if (__atomic_load_n(&h->tp_status, __ATOMIC_ACQUIRE) != TP_STATUS_AVAILABLE)
			return NULL;
	}
	return (uint8_t *)h + TX_DATA + VNET_HLEN;
}

/* Hands the frame of wire bytes written at tx_slot's pointer to the kernel's side of the ring. */
static void tx_commit(struct rs_link *l, uint8_t *d, uint32_t wire)
{
	struct tpacket2_hdr *h;

	if (l->xsk) {
		rs_xsk_tx_commit(l, wire);
		return;
	}
	h = (void *)(l->tx + (size_t)l->tx_head * l->frame_size);
	/* a plain frame, its checksum done: no GSO, no NEEDS_CSUM */
	memset(d - VNET_HLEN, 0, VNET_HLEN);
	h->tp_len = VNET_HLEN + wire;
	__atomic_store_n(&h->tp_status, TP_STATUS_SEND_REQUEST, __ATOMIC_RELEASE);
	l->tx_head = (l->tx_head + 1) % l->nframes;
	l->tx_pending++;
}

/* Writes a frame leaving port out into its TX ring: the port's tag added in trunk form. */
void rs_emit(struct rs_forwarder *fw, int out, const uint8_t *f, uint32_t len, uint32_t pcp, uint32_t copies)
{
	struct rs_link *l = &fw->link[fw->port_link[out]];
	struct rs_port_stats *ps = &fw->st.port[out];
	uint32_t vlan = fw->vlan[out], wire = len + (vlan ? VLAN_HLEN : 0), c;

	/* as a Linux device checks: MTU + Ethernet header + one tag */
	if (len < ETH_HLEN || len > fw->mtu[out] + ETH_HLEN + VLAN_HLEN ||
	    wire + VNET_HLEN + TX_DATA > l->frame_size) {
		ps->oversize++;
		return;
	}
	for (c = 0; c <= copies; c++) {
		uint8_t *d = tx_slot(fw, l);

		if (!d) {
			ps->tx_full++;
			continue;
		}
		if (vlan) {
			memcpy(d, f, 12);
			d[12] = ETH_P_8021Q >> 8;
			d[13] = ETH_P_8021Q & 0xff;
			d[14] = (uint8_t)(pcp << 5 | vlan >> 8);
			d[15] = (uint8_t)vlan;
			memcpy(d + 16, f + 12, len - 12);
		} else {
			memcpy(d, f, len);
		}
		tx_commit(l, d, wire);
		ps->tx++;
		ps->tx_bytes += wire;
	}
}

/* The port a received frame belongs to, or -1; *inline_tag when its tag is still in the data. */
static int rx_port(struct rs_forwarder *fw, struct rs_link *l, const struct tpacket2_hdr *h,
		   const uint8_t *data, uint32_t *tci, int *inline_tag)
{
	int tagged = (h->tp_status & TP_STATUS_VLAN_VALID) || h->tp_vlan_tci;
	uint32_t tpid = (h->tp_status & TP_STATUS_VLAN_TPID_VALID) ? h->tp_vlan_tpid : ETH_P_8021Q;
	int i;

	*inline_tag = 0;
	*tci = h->tp_vlan_tci;
	for (i = 0; i < l->nports; i++) {
		int p = l->port[i];

		if (!fw->vlan[p])
			return p;	/* a plain port owns its interface */
		if (tagged && tpid == ETH_P_8021Q && (*tci & 0xfff) == fw->vlan[p])
			return p;
		/* a tag the kernel left in the frame (no VLAN offload on this path) */
		if (!tagged && h->tp_snaplen >= 18 && rs_get_be16(data + 12) == ETH_P_8021Q &&
		    (rs_get_be16(data + 14) & 0xfff) == fw->vlan[p]) {
			*tci = rs_get_be16(data + 14);
			*inline_tag = 1;
			return p;
		}
	}
	return -1;
}

/* Runs the rules on one frame in a WORK_CAP buffer and does what they say. */
void rs_forward_frame(struct rs_forwarder *fw, int port, uint8_t *w, uint32_t len, uint32_t pcp, uint64_t now)
{
	struct rs_verdict v;

	rs_run_frame(fw, port, w, len, now, &v);
	if (v.verdict != RS_V_FORWARD)
		return;
	if (v.rule >= 0 && v.rule < RS_MAX_RULES && fw->hook_rule[v.rule]) {
		/* the slow path: this rule's frames leave when its Python hook says */
		struct rs_hook_meta m = { .timestamp_ns = now, .len = v.len, .rule = (uint16_t)v.rule,
					  .gen = fw->gen, .port = (uint8_t)port, .pcp = (uint8_t)pcp };

		if (rs_hookq_push(&fw->to_py, fw->slot_size, &m, w)) {
			fw->st.hook_overflow++;
		} else {
			fw->st.hook_queued++;
			fw->hook_pending = 1;
		}
		return;
	}
	if (v.delay_ns)
		rs_delay_enqueue(fw, port ^ 1, w, v.len, pcp, v.copies, now + v.delay_ns, v.rule);
	else
		rs_emit(fw, port ^ 1, w, v.len, pcp, v.copies);
}

/* One frame of l's RX ring: its port, its tag as the rules see it, then the rules. */
static void handle_rx(struct rs_forwarder *fw, struct rs_link *l, struct tpacket2_hdr *h)
{
	const uint8_t *data = (const uint8_t *)h + h->tp_mac;
	const struct sockaddr_ll *sll = (const void *)((const uint8_t *)h + RX_ADDR);
	uint32_t len = h->tp_snaplen, tci, pcp = 0, cut = 0, ins = 0;
	uint8_t *w = fw->work;
	struct rs_port_stats *ps;
	struct virtio_net_hdr vh;
	int port, inline_tag, n;
	uint64_t now;

	if (sll->sll_pkttype == PACKET_OUTGOING) {
		rs_link_drop_copy(l, h);
		return;	/* kernels without PACKET_IGNORE_OUTGOING */
	}
	port = rx_port(fw, l, h, data, &tci, &inline_tag);
	if (port < 0) {
		fw->st.not_ours++;
		rs_link_drop_copy(l, h);
		return;
	}
	ps = &fw->st.port[port];
	if (len < ETH_HLEN) {
		ps->oversize++;
		rs_link_drop_copy(l, h);
		return;
	}
	/* the frame as seen on the port's VLAN interface (README.md, the frame model) */
	if (fw->vlan[port]) {
		pcp = tci >> 13;
		cut = inline_tag ? VLAN_HLEN : 0;
	} else if ((h->tp_status & TP_STATUS_VLAN_VALID) || h->tp_vlan_tci) {
		/* an inner tag the kernel took off: it is frame data to the rules */
		ins = VLAN_HLEN;
	}
	if (h->tp_snaplen < h->tp_len) {
		/* longer than a slot: whole on the socket's queue, or nowhere when its buffer was full */
		if (!(h->tp_status & TP_STATUS_COPY)) {
			l->ring_drops++;
			return;
		}
		n = rs_link_take_copy(l, h, w, cut, ins, &vh);
		if (n < 0) {
			ps->oversize++;
			return;
		}
		len = (uint32_t)n;
	} else {
		memcpy(&vh, data - VNET_HLEN, VNET_HLEN);
		memcpy(w, data, 12);
		memcpy(w + 12 + ins, data + 12 + cut, len - 12 - cut);
		len = len - cut + ins;
	}
	if (ins) {
		uint32_t tpid = (h->tp_status & TP_STATUS_VLAN_TPID_VALID) ? h->tp_vlan_tpid : ETH_P_8021Q;

		rs_put_be16(w + 12, tpid);
		rs_put_be16(w + 14, tci);
	}
	now = rx_time(fw, h);
	if (vh.gso_type != VIRTIO_NET_HDR_GSO_NONE) {
		rs_forward_super_frame(fw, port, pcp, now, &vh, (int)ins - (int)cut, len);
		return;
	}
	ps->rx++;
	ps->rx_bytes += len;
	if (h->tp_status & TP_STATUS_CSUMNOTREADY)
		ps->csum_completed += (uint64_t)rs_csum_complete(w, len, 0);
	rs_forward_frame(fw, port, w, len, pcp, now);
}

/*
 * One frame of an XDP mode link (xsk.c): a plain port's, whole, as the wire
 * had it. No receive stamp comes with it: its time is the loop's.
 */
void rs_receive_frame(struct rs_forwarder *fw, struct rs_link *l, const uint8_t *data, uint32_t len)
{
	int port = l->port[0];
	struct rs_port_stats *ps = &fw->st.port[port];

	if (len < ETH_HLEN || len > WORK_CAP - RS_FRAME_ROOM) {
		ps->oversize++;
		return;
	}
	memcpy(fw->work, data, len);
	ps->rx++;
	ps->rx_bytes += len;
	/* a veth or tap peer's frame may come with its checksum left to the NIC, and XDP does not say */
	ps->csum_completed += (uint64_t)rs_csum_complete_seeded(fw->work, len, 0);
	rs_forward_frame(fw, port, fw->work, len, 0, fw->mono_now);
}

/* A batch of l's RX ring; returns how many frames it took. */
static int link_rx(struct rs_forwarder *fw, struct rs_link *l)
{
	int n;

	if (l->xsk)
		return rs_xsk_rx(fw, l, BATCH);
	for (n = 0; n < BATCH; n++) {
		struct tpacket2_hdr *h = (void *)(l->rx + (size_t)l->rx_head * l->frame_size);

		if (!(__atomic_load_n(&h->tp_status, __ATOMIC_ACQUIRE) & TP_STATUS_USER))
			break;
		handle_rx(fw, l, h);
		__atomic_store_n(&h->tp_status, TP_STATUS_KERNEL, __ATOMIC_RELEASE);
		l->rx_head = (l->rx_head + 1) % l->nframes;
	}
	return n;
}

int rs_forwarder_run(struct rs_forwarder *fw, int timeout_ms)
{
	uint64_t end = clock_ns(CLOCK_MONOTONIC) + (uint64_t)timeout_ms * (NSEC_PER_S / 1000);
	struct pollfd pfd[3];
	int total = 0, i;

	if (!fw->state)
		return -EINVAL;
	for (;;) {
		uint64_t now, wait;
		struct timespec ts;
		int n = 0;

		sample_clocks(fw);
		for (i = 0; i < fw->nlinks; i++)
			n += link_rx(fw, &fw->link[i]);
		if (fw->hook_pending) {
			rs_efd_signal(fw->to_py.efd);
			fw->hook_pending = 0;
		}
		n += rs_hook_returns(fw);
		now = clock_ns(CLOCK_MONOTONIC);
		n += rs_delay_release(fw, now);
		for (i = 0; i < fw->nlinks; i++)
			rs_link_kick(fw, &fw->link[i]);
		total += n;
		fw->st.loops++;
		if (fw->stop) {
			fw->stop = 0;
			break;
		}
		if (now >= end)
			break;
		if (n) {
			fw->last_active = now;
			continue;
		}
		/* busy polling: a sleeping loop pays a wake-up (tens of us) per idle-to-busy frame */
		if (fw->busy_poll_ns && now - fw->last_active < fw->busy_poll_ns &&
		    !(fw->nheap && fw->heap[0].dep <= now))
			continue;
		wait = end - now;
		if (fw->nheap) {
			uint64_t due = fw->heap[0].dep > now ? fw->heap[0].dep - now : 0;

			if (due < wait)
				wait = due;
		}
		for (i = 0; i < fw->nlinks; i++) {
			pfd[i].fd = fw->link[i].fd;
			pfd[i].events = POLLIN;
			pfd[i].revents = 0;
		}
		/* frames coming back from the hooks wake the loop too */
		pfd[fw->nlinks].fd = fw->from_py.efd;
		pfd[fw->nlinks].events = POLLIN;
		pfd[fw->nlinks].revents = 0;
		ts.tv_sec = (time_t)(wait / NSEC_PER_S);
		ts.tv_nsec = (long)(wait % NSEC_PER_S);
		if (ppoll(pfd, (nfds_t)fw->nlinks + 1, &ts, NULL) < 0 && errno != EINTR)
			return -errno;
		if (pfd[fw->nlinks].revents & POLLIN) {
			uint64_t count;

			if (read(fw->from_py.efd, &count, sizeof(count)) < 0) {
				/* EAGAIN: another read took it */
			}
		}
		for (i = 0; i < fw->nlinks; i++) {
			if (pfd[i].revents & POLLERR) {
				/* link went down: read the error so poll stops reporting it */
				int e;
				socklen_t sl = sizeof(e);

				getsockopt(pfd[i].fd, SOL_SOCKET, SO_ERROR, &e, &sl);
				if (!(pfd[i].revents & POLLIN))
					usleep(1000);
			}
		}
	}
	return total;
}

void rs_forwarder_stats(struct rs_forwarder *fw, struct rs_forwarder_stats *out)
{
	int i, j;

	for (i = 0; i < fw->nlinks; i++) {
		struct rs_link *l = &fw->link[i];
		struct tpacket_stats ts;
		socklen_t sl = sizeof(ts);

		if (l->xsk)
			l->ring_drops = rs_xsk_drops(l);
		else if (!getsockopt(l->fd, SOL_PACKET, PACKET_STATISTICS, &ts, &sl))
			l->ring_drops += ts.tp_drops;
	}
	*out = fw->st;
	for (i = 0; i < fw->nlinks; i++)
		for (j = 0; j < fw->link[i].nports; j++)
			out->port[fw->link[i].port[j]].ring_drops = fw->link[i].ring_drops;
	out->queued = fw->nheap;
	out->pool_frames = fw->pool_frames;
}

uint32_t rs_forwarder_carrier_flags(struct rs_forwarder *fw, int port)
{
	return rs_xsk_carrier_flags(&fw->link[fw->port_link[port & 1]]);
}

/* l can send: its rings are mapped, or its AF_XDP socket is open */
static int link_ready(const struct rs_link *l)
{
	return (l->map || l->xsk) && l->fd >= 0;
}

void rs_forwarder_close(struct rs_forwarder *fw)
{
	int i;

	if (!fw)
		return;
	/* frames still held for a delay, or back from a hook, leave now rather than never */
	if (fw->heap && link_ready(&fw->link[0]))
		rs_delay_release(fw, UINT64_MAX);
	if (fw->from_py.meta && link_ready(&fw->link[0]))
		rs_hook_returns(fw);
	for (i = 0; i < 2; i++) {
		if (link_ready(&fw->link[i]))
			rs_link_kick(fw, &fw->link[i]);
		if (fw->link[i].xsk)
			rs_xsk_close(&fw->link[i]);
		else
			rs_link_close(&fw->link[i]);
	}
	rs_hook_queues_close(fw);
	rs_trace_buffer_close(fw);
	rs_delay_pool_close(fw);
	free(fw);
}
