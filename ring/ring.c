// SPDX-License-Identifier: GPL-2.0 OR MIT
/*
 * Ring mode's per-frame loop: TPACKET_V2 RX and TX rings, the engine, a
 * delay queue. See ring.h for the interface.
 *
 * Why TPACKET_V2 for receive: a V3 block is handed to user space when it is
 * full or its timeout expires, which adds up to the timeout to every frame at
 * low rates (measured in DESIGN.md: 1.1 ms p50 with a 1 ms timeout, against
 * 140 us for V2). V2 hands over each frame as it lands.
 *
 * Super-frames. A veth or tap peer with TSO/GSO on (their default, so every
 * container and VM) hands over whole TCP or UDP segments of up to 64 KB, which
 * no Ethernet wire carries. The sockets take PACKET_VNET_HDR: a struct
 * virtio_net_hdr comes before every frame, saying how the kernel would cut it
 * (gso_type, gso_size) and where its partial checksum is. Ring slots stay sized
 * for the MTU: a longer frame lands in its slot cut short, marked TP_STATUS_COPY,
 * and whole on the socket's queue (PACKET_COPY_THRESH), read with recvmsg in
 * ring order. Then one of two ways:
 *  - the rules run once on the super-frame when none of them can tell its
 *    segments apart or treats frames one by one (only header rewrites, drops
 *    and matches on fields every segment shares: wire_frames_needed), and it
 *    leaves whole through a second socket with its virtio_net_hdr, for the
 *    kernel or the NIC to cut: 45 segments for the price of one frame;
 *  - otherwise (loss, delay, rate, duplicate, corrupt, payload, truncate,
 *    length or byte matches, hooks) it is cut here first, as the wire would
 *    carry it (netem does the same when it corrupts), and every segment runs
 *    the rules as a frame of its own.
 * Either way the counters count wire frames. (iperf3 TCP over veth here: 17
 * Gbit/s whole, 1.9 cut, where the kernel then carries 45 times the frames;
 * 19 through a Linux bridge.)
 */
#define _GNU_SOURCE
#include <errno.h>
#include <poll.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <linux/capability.h>
#include <linux/ethtool.h>
#include <linux/if_ether.h>
#include <linux/if_packet.h>
#include <linux/sockios.h>
#include <linux/tcp.h>
#include <linux/virtio_net.h>
#include <net/if.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/eventfd.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/uio.h>

#include "ring.h"
#include "rs_program.h"

#define BATCH        64            /* frames taken from one ring before looking at the other */
#define TX_DATA      TPACKET_ALIGN(sizeof(struct tpacket2_hdr)) /* TX V2: data after the header */
#define RX_ADDR      TPACKET_ALIGN(sizeof(struct tpacket2_hdr)) /* RX V2: sockaddr_ll after it */
#define WORK_CAP     (RS_MAX_FRAME + 64)
#define VLAN_HLEN    4
#define VNET_HLEN    sizeof(struct virtio_net_hdr) /* before every frame, both ways (PACKET_VNET_HDR) */
#define SNDBUF_BYTES (4 << 20)
/* super-frames waiting on the socket's queue, beside the ring: about 200 of 64 KB */
#define RCVBUF_BYTES (16 << 20)
#ifndef VIRTIO_NET_HDR_GSO_UDP_L4
#define VIRTIO_NET_HDR_GSO_UDP_L4 5 /* UDP_SEGMENT super-frames (Linux >= 6.2); Debian 12's headers predate it */
#endif
#define TCP_FLAGS(f) ((uint8_t)(ntohl(f) >> 16)) /* linux/tcp.h's TCP_FLAG_* as the flags byte */
#define TCP_CSUM_OFF 16            /* the checksum field in the TCP header */
#define UDP_CSUM_OFF 6
#define UDP_HLEN     8
#define HOOKQ_SIZE   1024          /* frames on their way to or from the Python hooks */
#define NSEC_PER_S   1000000000ull
#define RX_STAMP_MAX_AGE_NS NSEC_PER_S /* an older receive stamp means the wall clock stepped */

struct rs_link {
	int fd;
	int gso_fd;                /* no rings: sends super-frames whole, with their virtio_net_hdr */
	uint8_t *map, *rx, *tx;
	size_t map_len;
	uint32_t frame_size, nframes;
	uint32_t rx_head, tx_head, tx_pending;
	int nports, port[2];
	uint64_t ring_drops;       /* PACKET_STATISTICS, accumulated (reading resets it) */
};

/* a delayed frame: its departure, arrival order (ties), buffer, egress, rule */
struct rs_qent {
	uint64_t dep, seq;
	uint32_t slot, len;
	uint16_t copies;
	uint8_t port, pcp;
	uint16_t rule, gen;	/* the rule that delayed it, under program generation gen */
};

/* single producer, single consumer; head and tail run free, masked by HOOKQ_SIZE */
struct rs_hookq {
	uint32_t head, tail;
	struct rs_hook_meta *meta;
	uint8_t *buf;
	int efd;	/* the producer writes it, the consumer sleeps on it */
};

struct rs_bridge {
	struct rs_link link[2];
	int nlinks, port_link[2];
	uint32_t vlan[2], mtu[2];
	const uint8_t *prog;
	uint32_t prog_len;
	void *state;
	volatile int stop;
	struct rs_bridge_stats st;
	uint8_t *pool;
	uint32_t pool_frames, slot_size, nfree, nheap;
	uint32_t *free_slots;
	struct rs_qent *heap;
	uint64_t seq;
	uint64_t busy_poll_ns, last_active;
	uint64_t mono_now;              /* CLOCK_MONOTONIC at the top of this loop iteration */
	int64_t real_minus_mono;        /* CLOCK_REALTIME - CLOCK_MONOTONIC, sampled with it */
	uint16_t gen;                   /* bumped by each rs_bridge_set_program */
	uint32_t held[RS_MAX_RULES];    /* frames in the delay queue per rule of the running program */
	uint8_t hook_rule[RS_MAX_RULES];  /* rules whose frames go to Python */
	struct rs_hookq to_py, from_py;
	int hook_pending;               /* to_py got frames since the worker was last woken */
	int prog_wire, hooks_on;        /* the program, the hooks need wire frames (wire_frames_needed) */
	int cut;                        /* so super-frames are cut before the rules */
	uint32_t push_room;             /* bytes push_vlan may add in one rule: a super-frame goes whole only with room */
	struct rs_rule_state snap[RS_MAX_RULES]; /* the rules' counters before a super-frame ran */
	uint8_t work[WORK_CAP];
	uint8_t seg[WORK_CAP];          /* one segment of a super-frame being cut */
};

static uint32_t get_be16(const uint8_t *p) { return (uint32_t)p[0] << 8 | p[1]; }

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
static void sample_clocks(struct rs_bridge *b)
{
	uint64_t real = clock_ns(CLOCK_REALTIME);

	b->mono_now = clock_ns(CLOCK_MONOTONIC);
	b->real_minus_mono = (int64_t)(real - b->mono_now);
}

static uint64_t rx_time(const struct rs_bridge *b, const struct tpacket2_hdr *h)
{
	int64_t t = (int64_t)((uint64_t)h->tp_sec * NSEC_PER_S + h->tp_nsec) - b->real_minus_mono;

	if (t <= 0 || (uint64_t)t > b->mono_now || b->mono_now - (uint64_t)t > RX_STAMP_MAX_AGE_NS)
		return b->mono_now;
	return (uint64_t)t;
}

/* ---- opening ---- */

static int fail(char *err, uint32_t errlen, const char *what, const char *ifname)
{
	int e = errno;

	snprintf(err, errlen, "%s %s: %s", what, ifname, strerror(e));
	return -1;
}

static int link_open(struct rs_link *l, const char *ifname, const struct rs_bridge_config *cfg,
		     char *err, uint32_t errlen)
{
	struct tpacket_req req;
	struct sockaddr_ll sll;
	struct packet_mreq mr;
	int one = 1, version = TPACKET_V2, sndbuf = SNDBUF_BYTES, rcvbuf = RCVBUF_BYTES, ifindex;
	uint32_t block = cfg->frame_size > 65536 ? cfg->frame_size : 65536;

	ifindex = (int)if_nametoindex(ifname);
	if (!ifindex)
		return fail(err, errlen, "no interface", ifname);
	/* protocol 0: nothing is queued to the socket before its rings exist */
	l->fd = socket(AF_PACKET, SOCK_RAW, 0);
	if (l->fd < 0)
		return fail(err, errlen, "AF_PACKET socket for", ifname);
	if (setsockopt(l->fd, SOL_PACKET, PACKET_VERSION, &version, sizeof(version)))
		return fail(err, errlen, "TPACKET_V2 on", ifname);
	/* our own transmissions must not come back in through the RX ring */
	setsockopt(l->fd, SOL_PACKET, PACKET_IGNORE_OUTGOING, &one, sizeof(one));
	/* the bridge is the only sender here: skip the qdisc, as a NIC driver would see us */
	setsockopt(l->fd, SOL_PACKET, PACKET_QDISC_BYPASS, &one, sizeof(one));
	/* a frame the device refuses is skipped, not left to block the TX ring */
	setsockopt(l->fd, SOL_PACKET, PACKET_LOSS, &one, sizeof(one));
	/* TX ring frames are charged to the send buffer: the default stalls bursts */
	if (setsockopt(l->fd, SOL_SOCKET, SO_SNDBUFFORCE, &sndbuf, sizeof(sndbuf)))
		setsockopt(l->fd, SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof(sndbuf));
	/* super-frames (see the top of this file): the header says how to cut them; set before the rings */
	if (setsockopt(l->fd, SOL_PACKET, PACKET_VNET_HDR, &one, sizeof(one)))
		return fail(err, errlen, "PACKET_VNET_HDR on", ifname);
	/* a frame longer than a slot is queued whole to the socket too; its queue is charged to rcvbuf */
	if (setsockopt(l->fd, SOL_PACKET, PACKET_COPY_THRESH, &one, sizeof(one)))
		return fail(err, errlen, "PACKET_COPY_THRESH on", ifname);
	if (setsockopt(l->fd, SOL_SOCKET, SO_RCVBUFFORCE, &rcvbuf, sizeof(rcvbuf)))
		setsockopt(l->fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof(rcvbuf));

	l->frame_size = cfg->frame_size;
	l->nframes = (cfg->ring_frames * cfg->frame_size + block - 1) / block * (block / cfg->frame_size);
	memset(&req, 0, sizeof(req));
	req.tp_block_size = block;
	req.tp_frame_size = cfg->frame_size;
	req.tp_frame_nr = l->nframes;
	req.tp_block_nr = l->nframes / (block / cfg->frame_size);
	if (setsockopt(l->fd, SOL_PACKET, PACKET_RX_RING, &req, sizeof(req)) ||
	    setsockopt(l->fd, SOL_PACKET, PACKET_TX_RING, &req, sizeof(req)))
		return fail(err, errlen, "PACKET_RX_RING/TX_RING on", ifname);
	l->map_len = 2 * (size_t)req.tp_block_size * req.tp_block_nr;
	l->map = mmap(NULL, l->map_len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, l->fd, 0);
	if (l->map == MAP_FAILED) {
		l->map = NULL;
		return fail(err, errlen, "mmap of the rings of", ifname);
	}
	l->rx = l->map;
	l->tx = l->map + l->map_len / 2;

	/* promiscuous through the socket: the kernel undoes it when the socket goes */
	memset(&mr, 0, sizeof(mr));
	mr.mr_ifindex = ifindex;
	mr.mr_type = PACKET_MR_PROMISC;
	if (setsockopt(l->fd, SOL_PACKET, PACKET_ADD_MEMBERSHIP, &mr, sizeof(mr)))
		return fail(err, errlen, "promiscuous mode on", ifname);

	memset(&sll, 0, sizeof(sll));
	sll.sll_family = AF_PACKET;
	sll.sll_protocol = htons(ETH_P_ALL);
	sll.sll_ifindex = ifindex;
	if (bind(l->fd, (struct sockaddr *)&sll, sizeof(sll)))
		return fail(err, errlen, "bind to", ifname);

	/*
	 * Super-frames leave through a socket without rings (a TX ring slot holds an
	 * MTU frame, and a socket with a TX ring sends only from it), bound with
	 * protocol 0 so that it receives nothing. Not past the qdisc: where the device
	 * cannot take one whole (TSO off, no UDP segmentation) the kernel cuts it on
	 * the qdisc path, and drops it on the direct one (PACKET_QDISC_BYPASS).
	 */
	l->gso_fd = socket(AF_PACKET, SOCK_RAW, 0);
	if (l->gso_fd < 0)
		return fail(err, errlen, "AF_PACKET socket for", ifname);
	if (setsockopt(l->gso_fd, SOL_PACKET, PACKET_VNET_HDR, &one, sizeof(one)))
		return fail(err, errlen, "PACKET_VNET_HDR on", ifname);
	if (setsockopt(l->gso_fd, SOL_SOCKET, SO_SNDBUFFORCE, &sndbuf, sizeof(sndbuf)))
		setsockopt(l->gso_fd, SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof(sndbuf));
	sll.sll_protocol = 0;
	if (bind(l->gso_fd, (struct sockaddr *)&sll, sizeof(sll)))
		return fail(err, errlen, "bind to", ifname);
	return 0;
}

static void link_close(struct rs_link *l)
{
	if (l->map)
		munmap(l->map, l->map_len);
	if (l->fd >= 0)
		close(l->fd);
	if (l->gso_fd >= 0)
		close(l->gso_fd);
	l->map = NULL;
	l->fd = l->gso_fd = -1;
}

struct rs_bridge *rs_bridge_open(const struct rs_bridge_config *cfg, char *err, uint32_t errlen)
{
	struct rs_bridge *b;
	uint32_t i;
	int p;

	if (cfg->frame_size < 2048 || (cfg->frame_size & (cfg->frame_size - 1)) || !cfg->ring_frames) {
		snprintf(err, errlen, "ring frame size must be a power of two >= 2048");
		return NULL;
	}
	b = calloc(1, sizeof(*b));
	if (!b) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	b->link[0].fd = b->link[1].fd = b->link[0].gso_fd = b->link[1].gso_fd = -1;
	b->to_py.efd = b->from_py.efd = -1;
	for (p = 0; p < 2; p++) {
		b->vlan[p] = cfg->vlan[p];
		b->mtu[p] = cfg->mtu[p];
	}
	/* trunk form may put both ports on one interface: then one socket serves both */
	if (!strcmp(cfg->ifname[0], cfg->ifname[1])) {
		if (!cfg->vlan[0] || !cfg->vlan[1] || cfg->vlan[0] == cfg->vlan[1]) {
			snprintf(err, errlen, "ports on one interface need two different VLAN ids");
			goto out;
		}
		b->nlinks = 1;
		b->link[0].nports = 2;
		b->link[0].port[0] = 0;
		b->link[0].port[1] = 1;
		b->port_link[0] = b->port_link[1] = 0;
	} else {
		b->nlinks = 2;
		for (p = 0; p < 2; p++) {
			b->link[p].nports = 1;
			b->link[p].port[0] = p;
			b->port_link[p] = p;
		}
	}
	for (i = 0; i < (uint32_t)b->nlinks; i++)
		if (link_open(&b->link[i], cfg->ifname[i], cfg, err, errlen))
			goto out;

	b->pool_frames = cfg->pool_frames;
	b->busy_poll_ns = cfg->busy_poll_ns;
	b->slot_size = cfg->frame_size;
	b->pool = malloc((size_t)b->pool_frames * b->slot_size + 1);
	b->free_slots = malloc(sizeof(uint32_t) * (b->pool_frames + 1));
	b->heap = malloc(sizeof(struct rs_qent) * (b->pool_frames + 1));
	if (!b->pool || !b->free_slots || !b->heap) {
		snprintf(err, errlen, "out of memory for %u delay buffers", b->pool_frames);
		goto out;
	}
	for (i = 0; i < 2; i++) {
		struct rs_hookq *q = i ? &b->from_py : &b->to_py;

		q->meta = calloc(HOOKQ_SIZE, sizeof(*q->meta));
		q->buf = malloc((size_t)HOOKQ_SIZE * b->slot_size);
		/* the worker blocks on to_py's; the loop polls from_py's */
		q->efd = eventfd(0, EFD_CLOEXEC | (i ? EFD_NONBLOCK : 0));
		if (!q->meta || !q->buf || q->efd < 0) {
			snprintf(err, errlen, "out of memory or eventfds for the hook queues");
			goto out;
		}
	}
	for (i = 0; i < b->pool_frames; i++)
		b->free_slots[i] = b->pool_frames - 1 - i;
	b->nfree = b->pool_frames;
	/* timers for delayed frames: no 50 us default slack */
	prctl(PR_SET_TIMERSLACK, 1UL, 0, 0, 0);
	return b;
out:
	rs_bridge_close(b);
	return NULL;
}

/*
 * Whether a rule of this (verified) program could tell a super-frame from its
 * segments, or acts frame by frame, so that super-frames must be cut before
 * the rules: matches on the length, on bytes (payload, lengths, sequence
 * numbers differ from segment to segment), on the TCP flags the cutting moves
 * (FIN and PSH go to the last segment, CWR stays on the first), and every
 * action but header rewrites and drops. *push_room: the most bytes push_vlan
 * adds in one rule (the engine refuses a push past RS_MAX_FRAME).
 */
static int wire_frames_needed(const uint8_t *prog, uint32_t len, uint32_t *push_room)
{
	uint32_t off = RS_HDR_LEN, n = (uint32_t)prog[8] | (uint32_t)prog[9] << 8, i, k, o, pushes;
	int wire = 0;

	*push_room = 0;
	for (i = 0; i < n && off + RS_RULE_HDR_LEN <= len; i++) {
		const uint8_t *r = prog + off;

		pushes = 0;
		for (k = 0, o = RS_RULE_HDR_LEN; k < (uint32_t)r[4] + r[5]; k++, o += RS_OP_HDR_LEN + r[o + 1]) {
			const uint8_t *a = r + o + RS_OP_HDR_LEN;

			switch (r[o]) {
			case RS_M_ETH: case RS_M_HAS_VLAN: case RS_M_IP:
			case RS_A_SET_ETH: case RS_A_SET_IP: case RS_A_SET_FIELD: case RS_A_DEC_TTL:
			case RS_A_POP_VLAN: case RS_A_DROP:
				break;
			case RS_M_RANGE:
				wire |= a[0] == RS_F_LENGTH;
				break;
			case RS_M_TCP_FLAGS:
				wire |= (a[0] & (TCP_FLAGS(TCP_FLAG_FIN) | TCP_FLAGS(TCP_FLAG_PSH) |
						 TCP_FLAGS(TCP_FLAG_CWR))) != 0;
				break;
			case RS_A_PUSH_VLAN:
				pushes++;
				break;
			default:
				wire = 1;
			}
		}
		if (pushes * VLAN_HLEN > *push_room)
			*push_room = pushes * VLAN_HLEN;
		off += (uint32_t)r[0] | (uint32_t)r[1] << 8;
	}
	return wire;
}

void rs_bridge_set_program(struct rs_bridge *b, const uint8_t *prog, uint32_t len, void *state)
{
	b->prog = prog;
	b->prog_len = len;
	b->state = state;
	b->prog_wire = wire_frames_needed(prog, len, &b->push_room);
	b->cut = b->prog_wire || b->hooks_on;
	/* rule indexes change meaning: frames still queued count for no rule now */
	b->gen++;
	memset(b->held, 0, sizeof(b->held));
}

int rs_bridge_set_pool(struct rs_bridge *b, uint32_t frames)
{
	uint8_t *pool;
	uint32_t *free_slots;
	struct rs_qent *heap;
	uint32_t i;

	if (frames <= b->pool_frames)
		return 0;	/* never shrinks: queued frames may sit in any slot */
	pool = realloc(b->pool, (size_t)frames * b->slot_size + 1);
	if (!pool)
		return -ENOMEM;
	b->pool = pool;
	free_slots = realloc(b->free_slots, sizeof(uint32_t) * (frames + 1));
	if (!free_slots)
		return -ENOMEM;
	b->free_slots = free_slots;
	heap = realloc(b->heap, sizeof(struct rs_qent) * (frames + 1));
	if (!heap)
		return -ENOMEM;
	b->heap = heap;
	for (i = b->pool_frames; i < frames; i++)
		b->free_slots[b->nfree++] = i;
	b->pool_frames = frames;
	return 0;
}

void rs_bridge_rule_held(struct rs_bridge *b, uint32_t *out, uint32_t n)
{
	uint32_t i;

	for (i = 0; i < n; i++)
		out[i] = i < RS_MAX_RULES ? b->held[i] : 0;
}

void rs_bridge_stop(struct rs_bridge *b)
{
	b->stop = 1;
}

/* ---- the slow path to Python hooks ---- */

static int hookq_push(struct rs_hookq *q, uint32_t slot_size, const struct rs_hook_meta *m, const uint8_t *f)
{
	uint32_t tail = q->tail, head = __atomic_load_n(&q->head, __ATOMIC_ACQUIRE);

	if (tail - head >= HOOKQ_SIZE || m->len > slot_size)
		return -1;
	memcpy(q->buf + (size_t)(tail % HOOKQ_SIZE) * slot_size, f, m->len);
	q->meta[tail % HOOKQ_SIZE] = *m;
	__atomic_store_n(&q->tail, tail + 1, __ATOMIC_RELEASE);
	return 0;
}

static int hookq_pop(struct rs_hookq *q, uint32_t slot_size, struct rs_hook_meta *m, uint8_t *f, uint32_t cap)
{
	uint32_t head = q->head, tail = __atomic_load_n(&q->tail, __ATOMIC_ACQUIRE), len;

	if (head == tail)
		return 0;
	*m = q->meta[head % HOOKQ_SIZE];
	len = m->len < cap ? m->len : cap;
	memcpy(f, q->buf + (size_t)(head % HOOKQ_SIZE) * slot_size, len);
	__atomic_store_n(&q->head, head + 1, __ATOMIC_RELEASE);
	return (int)len;
}

static void efd_signal(int efd)
{
	uint64_t one = 1;

	if (write(efd, &one, sizeof(one)) < 0) {
		/* the counter cannot overflow in practice; a lost wake-up only delays */
	}
}

void rs_bridge_set_hooks(struct rs_bridge *b, const uint8_t *flags, uint32_t n)
{
	uint32_t i;

	b->hooks_on = 0;
	for (i = 0; i < RS_MAX_RULES; i++) {
		b->hook_rule[i] = i < n ? flags[i] != 0 : 0;
		b->hooks_on |= b->hook_rule[i];
	}
	/* hooks see wire frames (their queue slots hold one) */
	b->cut = b->prog_wire || b->hooks_on;
}

int rs_bridge_hook_fd(struct rs_bridge *b)
{
	return b->to_py.efd;
}

int rs_bridge_hook_take(struct rs_bridge *b, struct rs_hook_meta *m, uint8_t *buf, uint32_t cap)
{
	return hookq_pop(&b->to_py, b->slot_size, m, buf, cap);
}

int rs_bridge_hook_put(struct rs_bridge *b, const struct rs_hook_meta *m, const uint8_t *frame)
{
	if (m->port > 1 || hookq_push(&b->from_py, b->slot_size, m, frame))
		return -ENOSPC;
	efd_signal(b->from_py.efd);
	return 0;
}

void rs_bridge_hook_wake(struct rs_bridge *b)
{
	efd_signal(b->to_py.efd);
}

uint32_t rs_bridge_generation(struct rs_bridge *b)
{
	return b->gen;
}

/* ---- transmit ---- */

static void link_kick(struct rs_bridge *b, struct rs_link *l)
{
	if (!l->tx_pending)
		return;
	if (send(l->fd, NULL, 0, MSG_DONTWAIT) < 0 && errno != EAGAIN && errno != ENOBUFS) {
		/* e.g. ENETDOWN: the frames stay in the ring for the next kick */
		b->st.port[l->port[0]].tx_errors++;
		return;
	}
	l->tx_pending = 0;
}

/* Writes a frame leaving port out into its TX ring: the port's tag added in trunk form. */
static void emit(struct rs_bridge *b, int out, const uint8_t *f, uint32_t len, uint32_t pcp,
		 uint32_t copies)
{
	struct rs_link *l = &b->link[b->port_link[out]];
	struct rs_port_stats *ps = &b->st.port[out];
	uint32_t vlan = b->vlan[out], wire = len + (vlan ? VLAN_HLEN : 0), c;

	/* as a Linux device checks: MTU + Ethernet header + one tag */
	if (len < ETH_HLEN || len > b->mtu[out] + ETH_HLEN + VLAN_HLEN ||
	    wire + VNET_HLEN + TX_DATA > l->frame_size) {
		ps->oversize++;
		return;
	}
	for (c = 0; c <= copies; c++) {
		struct tpacket2_hdr *h = (void *)(l->tx + (size_t)l->tx_head * l->frame_size);
		uint8_t *d = (uint8_t *)h + TX_DATA + VNET_HLEN;

		if (__atomic_load_n(&h->tp_status, __ATOMIC_ACQUIRE) != TP_STATUS_AVAILABLE) {
			link_kick(b, l);
			if (__atomic_load_n(&h->tp_status, __ATOMIC_ACQUIRE) != TP_STATUS_AVAILABLE) {
				ps->tx_full++;
				continue;
			}
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
		/* a plain frame, its checksum done: no GSO, no NEEDS_CSUM */
		memset(d - VNET_HLEN, 0, VNET_HLEN);
		h->tp_len = VNET_HLEN + wire;
		__atomic_store_n(&h->tp_status, TP_STATUS_SEND_REQUEST, __ATOMIC_RELEASE);
		l->tx_head = (l->tx_head + 1) % l->nframes;
		l->tx_pending++;
		ps->tx++;
		ps->tx_bytes += wire;
	}
}

/* ---- the delay queue: a binary heap on (departure, arrival order) ---- */

static int qent_before(const struct rs_qent *a, const struct rs_qent *b)
{
	return a->dep < b->dep || (a->dep == b->dep && a->seq < b->seq);
}

static void heap_push(struct rs_bridge *b, struct rs_qent e)
{
	uint32_t i = b->nheap++;

	while (i && qent_before(&e, &b->heap[(i - 1) / 2])) {
		b->heap[i] = b->heap[(i - 1) / 2];
		i = (i - 1) / 2;
	}
	b->heap[i] = e;
}

static struct rs_qent heap_pop(struct rs_bridge *b)
{
	struct rs_qent top = b->heap[0], last = b->heap[--b->nheap];
	uint32_t i = 0, c;

	while ((c = 2 * i + 1) < b->nheap) {
		if (c + 1 < b->nheap && qent_before(&b->heap[c + 1], &b->heap[c]))
			c++;
		if (!qent_before(&b->heap[c], &last))
			break;
		b->heap[i] = b->heap[c];
		i = c;
	}
	b->heap[i] = last;
	return top;
}

static void enqueue(struct rs_bridge *b, int out, const uint8_t *f, uint32_t len, uint32_t pcp,
		    uint32_t copies, uint64_t dep, int32_t rule)
{
	struct rs_qent e;

	if (!b->nfree || len > b->slot_size) {
		b->st.pool_full++;
		return;
	}
	e.slot = b->free_slots[--b->nfree];
	memcpy(b->pool + (size_t)e.slot * b->slot_size, f, len);
	e.dep = dep;
	e.seq = b->seq++;
	e.len = len;
	e.copies = (uint16_t)copies;
	e.port = (uint8_t)out;
	e.pcp = (uint8_t)pcp;
	e.rule = rule >= 0 && rule < RS_MAX_RULES ? (uint16_t)rule : UINT16_MAX;
	e.gen = b->gen;
	if (e.rule != UINT16_MAX)
		b->held[e.rule]++;
	heap_push(b, e);
}

static int release_due(struct rs_bridge *b, uint64_t now)
{
	int n = 0;

	static const uint64_t bound[7] = { 1000, 2000, 5000, 10000, 20000, 50000, 100000 };

	while (b->nheap && b->heap[0].dep <= now) {
		struct rs_qent e = heap_pop(b);
		uint64_t late = now - e.dep;
		int k = 0;

		if (now != UINT64_MAX) {
			while (k < 7 && late >= bound[k])
				k++;
			b->st.late_hist[k]++;
			b->st.late_sum_ns += late;
			if (late > b->st.late_max_ns)
				b->st.late_max_ns = late;
		}

		emit(b, e.port, b->pool + (size_t)e.slot * b->slot_size, e.len, e.pcp, e.copies);
		b->free_slots[b->nfree++] = e.slot;
		if (e.gen == b->gen && e.rule != UINT16_MAX && b->held[e.rule])
			b->held[e.rule]--;
		n++;
	}
	return n;
}

/* ---- receive: whose frame, and the rules ---- */

/* The port a received frame belongs to, or -1; *inline_tag when its tag is still in the data. */
static int rx_port(struct rs_bridge *b, struct rs_link *l, const struct tpacket2_hdr *h,
		   const uint8_t *data, uint32_t *tci, int *inline_tag)
{
	int tagged = (h->tp_status & TP_STATUS_VLAN_VALID) || h->tp_vlan_tci;
	uint32_t tpid = (h->tp_status & TP_STATUS_VLAN_TPID_VALID) ? h->tp_vlan_tpid : ETH_P_8021Q;
	int i;

	*inline_tag = 0;
	*tci = h->tp_vlan_tci;
	for (i = 0; i < l->nports; i++) {
		int p = l->port[i];

		if (!b->vlan[p])
			return p;	/* a plain port owns its interface */
		if (tagged && tpid == ETH_P_8021Q && (*tci & 0xfff) == b->vlan[p])
			return p;
		/* a tag the kernel left in the frame (no VLAN offload on this path) */
		if (!tagged && h->tp_snaplen >= 18 && get_be16(data + 12) == ETH_P_8021Q &&
		    (get_be16(data + 14) & 0xfff) == b->vlan[p]) {
			*tci = get_be16(data + 14);
			*inline_tag = 1;
			return p;
		}
	}
	return -1;
}

/* Runs the rules on one frame in a WORK_CAP buffer and does what they say. */
static void forward_frame(struct rs_bridge *b, int port, uint8_t *w, uint32_t len, uint32_t pcp, uint64_t now)
{
	struct rs_verdict v;

	rs_run(b->prog, b->prog_len, b->state, w, len, WORK_CAP, (uint32_t)port + 1, 0, now, &v);
	if (v.verdict != RS_V_FORWARD)
		return;
	if (v.rule >= 0 && v.rule < RS_MAX_RULES && b->hook_rule[v.rule]) {
		/* the slow path: this rule's frames leave when its Python hook says */
		struct rs_hook_meta m = { .timestamp_ns = now, .len = v.len, .rule = (uint16_t)v.rule,
					  .gen = b->gen, .port = (uint8_t)port, .pcp = (uint8_t)pcp };

		if (hookq_push(&b->to_py, b->slot_size, &m, w)) {
			b->st.hook_overflow++;
		} else {
			b->st.hook_queued++;
			b->hook_pending = 1;
		}
		return;
	}
	if (v.delay_ns)
		enqueue(b, port ^ 1, w, v.len, pcp, v.copies, now + v.delay_ns, v.rule);
	else
		emit(b, port ^ 1, w, v.len, pcp, v.copies);
}

/* ---- super-frames (see the top of this file) ---- */

/* A super-frame in b->work, as the rules see it: its headers and how it is cut. */
struct rs_gso {
	uint32_t type;          /* VIRTIO_NET_HDR_GSO_TCPV4, _TCPV6 or _UDP_L4, with the _ECN bit */
	uint32_t mss;           /* payload bytes of each segment but the last (gso_size) */
	uint32_t l3, l4, hdr;   /* offsets of the IP header, the TCP/UDP header, the payload */
	uint32_t ck;            /* offset of the TCP/UDP checksum in the L4 header */
	uint32_t segs;
	int partial;            /* the checksum field holds the pseudo-header sum only (NEEDS_CSUM) */
};

static void put_be16(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)(v >> 8);
	p[1] = (uint8_t)v;
}

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
		s += get_be16(p + i);
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
	et = get_be16(w + 12);
	for (i = 0; i < 2 && (et == ETH_P_8021Q || et == ETH_P_8021AD) && g->l3 + 8 <= len; i++) {
		g->l3 += VLAN_HLEN;
		et = get_be16(w + g->l3);
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
 * Cuts the super-frame in b->work into the frames the wire would carry, as the
 * kernel's GSO does: lengths, IPv4 IDs counting up, sequence numbers, FIN/PSH
 * on the last segment and CWR on the first only, checksums computed whole.
 * Each then meets the rules as a frame of its own.
 */
static void cut_and_forward(struct rs_bridge *b, int port, uint32_t pcp, uint64_t now,
			    const struct rs_gso *g, uint32_t len)
{
	struct rs_port_stats *ps = &b->st.port[port];
	const uint8_t *w = b->work;
	uint8_t *s = b->seg;
	int v4 = w[g->l3] >> 4 == 4, tcp = g->ck == TCP_CSUM_OFF;
	uint32_t id = v4 ? get_be16(w + g->l3 + 4) : 0, off, n, i, slen;
	uint32_t seq = tcp ? (uint32_t)get_be16(w + g->l4 + 4) << 16 | get_be16(w + g->l4 + 6) : 0;

	for (i = 0, off = g->hdr; off < len; i++, off += n) {
		n = len - off < g->mss ? len - off : g->mss;
		slen = g->hdr + n;
		memcpy(s, w, g->hdr);
		memcpy(s + g->hdr, w + off, n);
		if (v4) {
			put_be16(s + g->l3 + 2, slen - g->l3);
			put_be16(s + g->l3 + 4, id + i);
			put_be16(s + g->l3 + 10, 0);
			put_be16(s + g->l3 + 10, ~csum_sum(s + g->l3, (uint32_t)(s[g->l3] & 0xf) * 4) & 0xffff);
		} else {
			put_be16(s + g->l3 + 4, slen - g->l3 - 40);
		}
		if (tcp) {
			uint32_t q = seq + i * g->mss;

			put_be16(s + g->l4 + 4, q >> 16);
			put_be16(s + g->l4 + 6, q);
			if (off + n < len)
				s[g->l4 + 13] &= (uint8_t)~(TCP_FLAGS(TCP_FLAG_FIN) | TCP_FLAGS(TCP_FLAG_PSH));
			if (i)
				s[g->l4 + 13] &= (uint8_t)~TCP_FLAGS(TCP_FLAG_CWR);
		} else {
			put_be16(s + g->l4 + 4, slen - g->l4);
		}
		ps->csum_completed += (uint64_t)rs_csum_complete(s, slen, 0);
		ps->rx++;
		ps->rx_bytes += slen;
		forward_frame(b, port, s, slen, pcp, now);
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
	return csum_fold(csum_sum(w + g->l4, g->hdr - g->l4) + (~get_be16(w + g->l4 + g->ck) & 0xffff));
}

static void partial_to_complete(uint8_t *w, const struct rs_gso *g)
{
	uint32_t c = ~csum_fold(get_be16(w + g->l4 + g->ck) + l4_header_sum(w, g)) & 0xffff;

	/* 0xffff, the other zero: a UDP checksum of 0 means "none" to the engine, which leaves it */
	put_be16(w + g->l4 + g->ck, c ? c : 0xffff);
}

static void complete_to_partial(uint8_t *w, const struct rs_gso *g)
{
	uint32_t f = get_be16(w + g->l4 + g->ck);

	put_be16(w + g->l4 + g->ck, csum_fold((~f & 0xffff) + (~l4_header_sum(w, g) & 0xffff)));
}

/*
 * The engine ran once on a super-frame of g->segs wire frames: make its counters
 * what as many runs on the segments would have left. Only the global counters
 * and those of the rule that matched can have moved; bytes become the segments'.
 */
static void count_as_segments(struct rs_bridge *b, const struct rs_counters *before, int32_t rule,
			      uint32_t segs, uint64_t seg_bytes)
{
	struct rs_state *st = b->state;
	uint64_t *now = (uint64_t *)&st->counters;
	const uint64_t *was = (const uint64_t *)before;
	uint32_t i;

	for (i = 0; i < sizeof(*before) / sizeof(uint64_t); i++)
		now[i] += (now[i] - was[i]) * (segs - 1);
	if (rule >= 0 && (uint32_t)rule < st->n_rules) {
		struct rs_rule_state *rs = (struct rs_rule_state *)(st + 1) + rule, *old = &b->snap[rule];
		uint64_t *n = &rs->matched;
		const uint64_t *o = &old->matched;

		/* the counters come first, up to the timing state */
		for (i = 0; i < offsetof(struct rs_rule_state, last_departure) / sizeof(uint64_t); i++)
			n[i] += (n[i] - o[i]) * (segs - 1);
		rs->bytes = old->bytes + seg_bytes;
	}
}

/* Sends a super-frame whole out of port out, the port's tag added in trunk form, for the kernel to cut. */
static void emit_whole(struct rs_bridge *b, int out, const uint8_t *f, uint32_t len, uint32_t pcp,
		       const struct rs_gso *g)
{
	struct rs_link *l = &b->link[b->port_link[out]];
	struct rs_port_stats *ps = &b->st.port[out];
	uint32_t vlan = b->vlan[out], add = vlan ? VLAN_HLEN : 0;
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
	if (g->hdr + g->mss > b->mtu[out] + ETH_HLEN + VLAN_HLEN) {
		ps->oversize += g->segs;
		return;
	}
	/* the frames before it in the TX ring leave first */
	link_kick(b, l);
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

/* The rules once on a super-frame whose segments none of them could tell apart (b->cut is 0). */
static void forward_whole(struct rs_bridge *b, int port, uint32_t pcp, uint64_t now, struct rs_gso *g,
			  uint32_t len)
{
	struct rs_port_stats *ps = &b->st.port[port];
	struct rs_state *st = b->state;
	uint8_t *w = b->work;
	uint64_t seg_bytes = len + (uint64_t)(g->segs - 1) * g->hdr;
	struct rs_counters before = st->counters;
	struct rs_verdict v;
	int32_t shift;

	ps->rx += g->segs;
	ps->rx_bytes += seg_bytes;
	/* the rules' states follow struct rs_state (rs_program.h); at most RS_MAX_RULES (verified) */
	memcpy(b->snap, st + 1, st->n_rules * sizeof(struct rs_rule_state));
	partial_to_complete(w, g);
	rs_run(b->prog, b->prog_len, b->state, w, len, WORK_CAP, (uint32_t)port + 1, 0, now, &v);
	count_as_segments(b, &before, v.rule, g->segs, seg_bytes);
	if (v.verdict != RS_V_FORWARD)
		return;
	/* push_vlan and pop_vlan move the headers; nothing else here changes the length */
	shift = (int32_t)v.len - (int32_t)len;
	g->l3 += (uint32_t)shift;
	g->l4 += (uint32_t)shift;
	g->hdr += (uint32_t)shift;
	complete_to_partial(w, g);
	emit_whole(b, port ^ 1, w, v.len, pcp, g);
}

/* ---- receive: from the ring ---- */

/* Throws away the whole copy of a frame the ring holds the start of (TP_STATUS_COPY). */
static void drop_copy(struct rs_link *l, const struct tpacket2_hdr *h)
{
	uint8_t vh[VNET_HLEN];

	if ((h->tp_status & TP_STATUS_COPY) && recv(l->fd, vh, sizeof(vh), MSG_DONTWAIT | MSG_TRUNC) < 0) {
		/* nothing queued after all: nothing to throw away */
	}
}

/*
 * The whole of a frame the ring holds the start of, from the socket's queue
 * (copies are queued in ring order), into w as handle_rx lays it out: the
 * first 12 bytes, cut bytes of a port tag left out, ins bytes of room for an
 * inner tag. Its length in w, or -1.
 */
static int take_copy(struct rs_link *l, const struct tpacket2_hdr *h, uint8_t *w, uint32_t cut, uint32_t ins,
		     struct virtio_net_hdr *vh)
{
	uint8_t tag[VLAN_HLEN];
	struct iovec iov[4] = {
		{ vh, VNET_HLEN }, { w, 12 }, { tag, cut }, { w + 12 + ins, WORK_CAP - 12 - ins },
	};
	struct msghdr msg = { .msg_iov = iov, .msg_iovlen = 4 };
	ssize_t n = recvmsg(l->fd, &msg, MSG_DONTWAIT | MSG_TRUNC);

	if (n < 0 || (size_t)n != VNET_HLEN + h->tp_len || h->tp_len - 12 - cut > WORK_CAP - 12 - ins)
		return -1;
	return (int)(h->tp_len - cut + ins);
}

static void handle_rx(struct rs_bridge *b, struct rs_link *l, struct tpacket2_hdr *h)
{
	const uint8_t *data = (const uint8_t *)h + h->tp_mac;
	const struct sockaddr_ll *sll = (const void *)((const uint8_t *)h + RX_ADDR);
	uint32_t len = h->tp_snaplen, tci, pcp = 0, cut = 0, ins = 0;
	uint8_t *w = b->work;
	struct rs_port_stats *ps;
	struct virtio_net_hdr vh;
	struct rs_gso g;
	int port, inline_tag, n;
	uint64_t now;

	if (sll->sll_pkttype == PACKET_OUTGOING) {
		drop_copy(l, h);
		return;	/* kernels without PACKET_IGNORE_OUTGOING */
	}
	port = rx_port(b, l, h, data, &tci, &inline_tag);
	if (port < 0) {
		b->st.not_ours++;
		drop_copy(l, h);
		return;
	}
	ps = &b->st.port[port];
	if (len < ETH_HLEN) {
		ps->oversize++;
		drop_copy(l, h);
		return;
	}
	/* the frame as seen on the port's VLAN interface (DESIGN.md, frame model) */
	if (b->vlan[port]) {
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
		n = take_copy(l, h, w, cut, ins, &vh);
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

		put_be16(w + 12, tpid);
		put_be16(w + 14, tci);
	}
	now = rx_time(b, h);
	if (vh.gso_type != VIRTIO_NET_HDR_GSO_NONE) {
		ps->gso_rx++;
		if (gso_parse(w, len, &vh, (int)ins - (int)cut, &g)) {
			ps->oversize++;
			return;
		}
		/* whole only with its partial checksum to keep, and room for the rules' push_vlan */
		if (b->cut || !g.partial || len + b->push_room > RS_MAX_FRAME)
			cut_and_forward(b, port, pcp, now, &g, len);
		else
			forward_whole(b, port, pcp, now, &g, len);
		return;
	}
	ps->rx++;
	ps->rx_bytes += len;
	if (h->tp_status & TP_STATUS_CSUMNOTREADY)
		ps->csum_completed += (uint64_t)rs_csum_complete(w, len, 0);
	forward_frame(b, port, w, len, pcp, now);
}

static int link_rx(struct rs_bridge *b, struct rs_link *l)
{
	int n;

	for (n = 0; n < BATCH; n++) {
		struct tpacket2_hdr *h = (void *)(l->rx + (size_t)l->rx_head * l->frame_size);

		if (!(__atomic_load_n(&h->tp_status, __ATOMIC_ACQUIRE) & TP_STATUS_USER))
			break;
		handle_rx(b, l, h);
		__atomic_store_n(&h->tp_status, TP_STATUS_KERNEL, __ATOMIC_RELEASE);
		l->rx_head = (l->rx_head + 1) % l->nframes;
	}
	return n;
}

/* ---- the loop ---- */

/* Frames the hooks gave back: out of the port they name. */
static int hook_returns(struct rs_bridge *b)
{
	struct rs_hook_meta m;
	int n = 0, len;

	while ((len = hookq_pop(&b->from_py, b->slot_size, &m, b->work, WORK_CAP)) > 0) {
		emit(b, m.port, b->work, (uint32_t)len, m.pcp, 0);
		b->st.hook_returned++;
		n++;
	}
	return n;
}

int rs_bridge_run(struct rs_bridge *b, int timeout_ms)
{
	uint64_t end = clock_ns(CLOCK_MONOTONIC) + (uint64_t)timeout_ms * (NSEC_PER_S / 1000);
	struct pollfd pfd[3];
	int total = 0, i;

	if (!b->prog)
		return -EINVAL;
	for (;;) {
		uint64_t now, wait;
		struct timespec ts;
		int n = 0;

		sample_clocks(b);
		for (i = 0; i < b->nlinks; i++)
			n += link_rx(b, &b->link[i]);
		if (b->hook_pending) {
			efd_signal(b->to_py.efd);
			b->hook_pending = 0;
		}
		n += hook_returns(b);
		now = clock_ns(CLOCK_MONOTONIC);
		n += release_due(b, now);
		for (i = 0; i < b->nlinks; i++)
			link_kick(b, &b->link[i]);
		total += n;
		b->st.loops++;
		if (b->stop) {
			b->stop = 0;
			break;
		}
		if (now >= end)
			break;
		if (n) {
			b->last_active = now;
			continue;
		}
		/* busy polling: a sleeping loop pays a wake-up (tens of us) per idle-to-busy frame */
		if (b->busy_poll_ns && now - b->last_active < b->busy_poll_ns &&
		    !(b->nheap && b->heap[0].dep <= now))
			continue;
		wait = end - now;
		if (b->nheap) {
			uint64_t due = b->heap[0].dep > now ? b->heap[0].dep - now : 0;

			if (due < wait)
				wait = due;
		}
		for (i = 0; i < b->nlinks; i++) {
			pfd[i].fd = b->link[i].fd;
			pfd[i].events = POLLIN;
			pfd[i].revents = 0;
		}
		/* frames coming back from the hooks wake the loop too */
		pfd[b->nlinks].fd = b->from_py.efd;
		pfd[b->nlinks].events = POLLIN;
		pfd[b->nlinks].revents = 0;
		ts.tv_sec = (time_t)(wait / NSEC_PER_S);
		ts.tv_nsec = (long)(wait % NSEC_PER_S);
		if (ppoll(pfd, (nfds_t)b->nlinks + 1, &ts, NULL) < 0 && errno != EINTR)
			return -errno;
		if (pfd[b->nlinks].revents & POLLIN) {
			uint64_t count;

			if (read(b->from_py.efd, &count, sizeof(count)) < 0) {
				/* EAGAIN: another read took it */
			}
		}
		for (i = 0; i < b->nlinks; i++) {
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

void rs_bridge_stats(struct rs_bridge *b, struct rs_bridge_stats *out)
{
	int i, j;

	for (i = 0; i < b->nlinks; i++) {
		struct rs_link *l = &b->link[i];
		struct tpacket_stats ts;
		socklen_t sl = sizeof(ts);

		if (!getsockopt(l->fd, SOL_PACKET, PACKET_STATISTICS, &ts, &sl))
			l->ring_drops += ts.tp_drops;
	}
	*out = b->st;
	for (i = 0; i < b->nlinks; i++)
		for (j = 0; j < b->link[i].nports; j++)
			out->port[b->link[i].port[j]].ring_drops = b->link[i].ring_drops;
	out->queued = b->nheap;
	out->pool_frames = b->pool_frames;
}

void rs_bridge_close(struct rs_bridge *b)
{
	int i;

	if (!b)
		return;
	/* frames still held for a delay, or back from a hook, leave now rather than never */
	if (b->heap && b->link[0].map)
		release_due(b, UINT64_MAX);
	if (b->from_py.meta && b->link[0].map)
		hook_returns(b);
	for (i = 0; i < 2; i++) {
		if (b->link[i].map && b->link[i].fd >= 0)
			link_kick(b, &b->link[i]);
		link_close(&b->link[i]);
	}
	for (i = 0; i < 2; i++) {
		struct rs_hookq *q = i ? &b->from_py : &b->to_py;

		if (q->efd >= 0)
			close(q->efd);
		free(q->meta);
		free(q->buf);
	}
	free(b->pool);
	free(b->free_slots);
	free(b->heap);
	free(b);
}

/* ---- interface settings and privileges ---- */

static int ethtool_value(int fd, const char *ifname, uint32_t cmd, uint32_t *value)
{
	struct ethtool_value ev = { .cmd = cmd, .data = *value };
	struct ifreq ifr;

	memset(&ifr, 0, sizeof(ifr));
	snprintf(ifr.ifr_name, sizeof(ifr.ifr_name), "%s", ifname);
	ifr.ifr_data = (void *)&ev;
	if (ioctl(fd, SIOCETHTOOL, &ifr))
		return -errno;
	*value = ev.data;
	return 0;
}

int rs_set_offloads(const char *ifname, int features, int on)
{
	static const uint32_t get[3] = { ETHTOOL_GGRO, ETHTOOL_GGSO, ETHTOOL_GTSO };
	static const uint32_t set[3] = { ETHTOOL_SGRO, ETHTOOL_SGSO, ETHTOOL_STSO };
	int fd = socket(AF_INET, SOCK_DGRAM, 0), prev = 0, i, rc = 0;

	if (fd < 0)
		return -errno;
	for (i = 0; i < 3; i++) {
		uint32_t v = 0;

		if (!(features & (1 << i)))
			continue;
		if (ethtool_value(fd, ifname, get[i], &v) == 0 && v)
			prev |= 1 << i;
		v = on ? 1 : 0;
		/* a device without the feature refuses: not an error for us */
		if ((rc = ethtool_value(fd, ifname, set[i], &v)) && rc != -EOPNOTSUPP && rc != -EINVAL)
			break;
		rc = 0;
	}
	close(fd);
	return rc ? rc : prev;
}

/*
 * Keeps only the capabilities in keep (a mask of CAP_* bits), in the
 * effective, permitted and bounding sets, and forbids regaining any.
 */
int rs_drop_capabilities(uint64_t keep)
{
	struct __user_cap_header_struct hdr = { .version = _LINUX_CAPABILITY_VERSION_3, .pid = 0 };
	struct __user_cap_data_struct data[2];
	int cap;

	/*
	 * The bounding set shrinks only with CAP_SETPCAP (a systemd unit's
	 * CapabilityBoundingSet usually leaves it out): then it stays as the
	 * unit made it, and the permitted set below is what counts.
	 */
	for (cap = 0; cap <= 63; cap++) {
		if (keep & (1ull << cap) || prctl(PR_CAPBSET_READ, cap, 0, 0, 0) <= 0)
			continue;
		if (prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) && errno != EPERM)
			return -errno;
	}
	memset(data, 0, sizeof(data));
	data[0].effective = data[0].permitted = (uint32_t)keep;
	data[1].effective = data[1].permitted = (uint32_t)(keep >> 32);
	if (syscall(SYS_capset, &hdr, data))
		return -errno;
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0))
		return -errno;
	return 0;
}
