/* SPDX-License-Identifier: GPL-2.0 OR MIT */
/*
 * Ring mode's insides, shared by its units and by nothing else: the
 * forwarder's state and the calls the units make of each other.
 *   forwarder.c     the loop: receive, the engine, transmit; open, close, counters
 *   link.c          a port interface's AF_PACKET sockets and PACKET_MMAP rings
 *   xsk.c           XDP mode's links instead: an AF_XDP socket, its UMEM, the XDP program
 *   delay_queue.c   delayed frames: the buffer pool and the heap by departure
 *   hook_queue.c    the queues to and from the Python hooks, and their eventfds
 *   trace_buffer.c  the records `reshaper trace` reads, while tracing is on
 *   super_frames.c  GSO super-frames: cut here, or sent whole for the kernel to cut
 * ring.h is the interface Python sees; reshaper/_ffi_build.py gives cffi that
 * header only, never this one.
 */
#ifndef RS_RING_INTERNAL_H
#define RS_RING_INTERNAL_H

#include <stddef.h>
#include <stdint.h>
#include <linux/if_packet.h>
#include <linux/virtio_net.h>

#include "ring.h"
#include "rs_program.h"

#define WORK_CAP     (RS_MAX_FRAME + RS_FRAME_ROOM)
#define VLAN_HLEN    RS_VLAN_HLEN
#define VNET_HLEN    sizeof(struct virtio_net_hdr) /* before every frame, both ways (PACKET_VNET_HDR) */

/* One port interface: both ports' in trunk form on one interface, else one port's. */
struct rs_link {
	int fd;
	int gso_fd;                /* no rings: sends super-frames whole, with their virtio_net_hdr */
	uint8_t *map, *rx, *tx;
	size_t map_len;
	uint32_t frame_size, nframes;
	uint32_t rx_head, tx_head, tx_pending;
	int nports, port[2];
	uint64_t ring_drops;       /* PACKET_STATISTICS, accumulated (reading resets it) */
	struct rs_xsk *xsk;        /* XDP mode: frames come and go through this instead (xsk.c); fd is its socket */
};

/* a delayed frame: its departure, arrival order (ties), buffer, egress, rule */
struct rs_qent {
	uint64_t dep, seq;
	uint32_t slot, len;
	uint16_t copies;
	uint8_t port, pcp;
	uint16_t rule, gen;	/* the rule that delayed it, under program generation gen */
};

/* single producer, single consumer; head and tail run free, masked by the queue's size (hook_queue.c) */
struct rs_hookq {
	uint32_t head, tail;
	struct rs_hook_meta *meta;
	uint8_t *buf;
	int efd;	/* the producer writes it, the consumer sleeps on it */
};

/* trace_buffer.c: one producer (the loop), one consumer (rs_forwarder_trace_take) */
struct rs_trace_buffer {
	int on;                         /* rs_forwarder_set_trace */
	int32_t rule;                   /* the rule traced; < 0: every frame */
	uint32_t head, tail;
	uint64_t lost;                  /* frames that found the ring full */
	struct rs_trace_record *rec;    /* RS_TRACE_SLOTS */
	uint32_t caplen;                /* the frame being run: its first bytes, as it arrived */
	uint8_t head_bytes[RS_TRACE_HEAD];
};

struct rs_forwarder {
	struct rs_link link[2];
	int nlinks, port_link[2];
	uint32_t vlan[2], mtu[2];
	void *state;		/* the engine's, which holds its program (rs_program.h) */
	volatile int stop;
	struct rs_forwarder_stats st;
	uint8_t *pool;
	uint32_t pool_frames, slot_size, nfree, nheap;
	uint32_t *free_slots;
	struct rs_qent *heap;
	uint64_t seq;
	uint64_t busy_poll_ns, last_active;
	uint64_t mono_now;              /* CLOCK_MONOTONIC at the top of this loop iteration */
	int64_t real_minus_mono;        /* CLOCK_REALTIME - CLOCK_MONOTONIC, sampled with it */
	uint16_t gen;                   /* bumped by each rs_forwarder_set_program */
	uint32_t held[RS_MAX_RULES];    /* frames in the delay queue per rule of the running program */
	uint8_t hook_rule[RS_MAX_RULES];  /* rules whose frames go to Python */
	struct rs_hookq to_py, from_py;
	int hook_pending;               /* to_py got frames since the worker was last woken */
	int prog_wire, hooks_on;        /* the program, the hooks need wire frames (rs_wire_frames_needed) */
	int cut;                        /* so super-frames are cut before the rules */
	uint32_t push_room;             /* bytes push_vlan may add in one rule: a super-frame goes whole only with room */
	struct rs_rule_state snap;	/* the counters of the rule a super-frame meets, before it ran */
	uint8_t work[WORK_CAP];
	uint8_t seg[WORK_CAP];          /* one segment of a super-frame being cut */
	struct rs_trace_buffer trace;   /* last: the loop's other fields keep their places */
};

static inline uint32_t rs_get_be16(const uint8_t *p) { return (uint32_t)p[0] << 8 | p[1]; }

static inline void rs_put_be16(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)(v >> 8);
	p[1] = (uint8_t)v;
}

/*
 * The units' calls of each other stay inside the extension: hidden, they are
 * neither exported by reshaper/_native*.so nor called through its PLT.
 */
#pragma GCC visibility push(hidden)

/* forwarder.c */
void rs_receive_frame(struct rs_forwarder *fw, struct rs_link *l, const uint8_t *data, uint32_t len);
void rs_forward_frame(struct rs_forwarder *fw, int port, uint8_t *w, uint32_t len, uint32_t pcp, uint64_t now);
void rs_emit(struct rs_forwarder *fw, int out, const uint8_t *f, uint32_t len, uint32_t pcp, uint32_t copies);

/* link.c */
int rs_link_open(struct rs_link *l, const char *ifname, const struct rs_forwarder_config *cfg,
		 char *err, uint32_t errlen);
void rs_link_close(struct rs_link *l);
void rs_link_kick(struct rs_forwarder *fw, struct rs_link *l);
void rs_link_drop_copy(struct rs_link *l, const struct tpacket2_hdr *h);
int rs_link_take_copy(struct rs_link *l, const struct tpacket2_hdr *h, uint8_t *w, uint32_t cut, uint32_t ins,
		      struct virtio_net_hdr *vh);

/* xsk.c */
int rs_xsk_open(struct rs_link *l, const char *ifname, const struct rs_forwarder_config *cfg, uint32_t mtu,
		char *err, uint32_t errlen);
void rs_xsk_close(struct rs_link *l);
int rs_xsk_rx(struct rs_forwarder *fw, struct rs_link *l, int budget);
uint8_t *rs_xsk_tx_slot(struct rs_link *l);
void rs_xsk_tx_commit(struct rs_link *l, uint32_t len);
void rs_xsk_kick(struct rs_forwarder *fw, struct rs_link *l);
uint64_t rs_xsk_drops(struct rs_link *l);
uint32_t rs_xsk_carrier_flags(const struct rs_link *l);

/* delay_queue.c */
int rs_delay_pool_open(struct rs_forwarder *fw, uint32_t frames);
void rs_delay_pool_close(struct rs_forwarder *fw);
void rs_delay_enqueue(struct rs_forwarder *fw, int out, const uint8_t *f, uint32_t len, uint32_t pcp,
		      uint32_t copies, uint64_t dep, int32_t rule);
int rs_delay_release(struct rs_forwarder *fw, uint64_t now);

/* hook_queue.c */
int rs_hook_queues_open(struct rs_forwarder *fw);
void rs_hook_queues_close(struct rs_forwarder *fw);
int rs_hookq_push(struct rs_hookq *q, uint32_t slot_size, const struct rs_hook_meta *m, const uint8_t *f);
void rs_efd_signal(int efd);
int rs_hook_returns(struct rs_forwarder *fw);

/* trace_buffer.c: rs_trace_before the rules run on a frame, rs_trace_after with their verdict;
 * both only while fw->trace.on (rs_run_frame) */
int rs_trace_buffer_open(struct rs_forwarder *fw);
void rs_trace_buffer_close(struct rs_forwarder *fw);
void rs_trace_before(struct rs_forwarder *fw, const uint8_t *frame, uint32_t len);
void rs_trace_after(struct rs_forwarder *fw, int port, uint64_t now, uint32_t len, const struct rs_verdict *v);

/* super_frames.c */
int rs_wire_frames_needed(const uint8_t *prog, uint32_t len, uint32_t *push_room);
void rs_forward_super_frame(struct rs_forwarder *fw, int port, uint32_t pcp, uint64_t now,
			    const struct virtio_net_hdr *vh, int shift, uint32_t len);

#pragma GCC visibility pop

/* The rules on one frame in a WORK_CAP buffer, traced while tracing is on: the loop's one way
 * to run them (a frame, a segment, a super-frame run whole). */
static inline void rs_run_frame(struct rs_forwarder *fw, int port, uint8_t *w, uint32_t len, uint64_t now,
				struct rs_verdict *v)
{
	int tracing = __builtin_expect(__atomic_load_n(&fw->trace.on, __ATOMIC_RELAXED), 0);

	if (tracing)
		rs_trace_before(fw, w, len);
	rs_run(fw->state, w, len, WORK_CAP, (uint32_t)port + 1, 0, now, v);
	if (tracing)
		rs_trace_after(fw, port, now, len, v);
}

#endif /* RS_RING_INTERNAL_H */
