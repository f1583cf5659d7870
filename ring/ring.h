/* SPDX-License-Identifier: GPL-2.0 OR MIT */
/*
 * Ring mode's forwarder, the interface Python sees (ring/__init__.py, through
 * reshaper/_ffi_build.py): the per-frame loop between two ports, in C.
 * AF_PACKET TPACKET_V2 RX and TX rings on each port's interface (or, in XDP
 * mode, an AF_XDP socket: xsk.c), the shared engine on every frame, a timer
 * queue for delayed frames. Python only opens,
 * reloads, reads counters and stops it. Super-frames (GSO: the 64 KB TCP/UDP
 * segments a veth or tap peer with TSO/GSO hands over) arrive whole with their
 * virtio_net_hdr; super_frames.c says how the rules and the counters see them.
 * The units behind it and what they share: ring_internal.h.
 */
#ifndef RS_RING_H
#define RS_RING_H

#include <stdint.h>

#include "rs_program.h"	/* the engine's verdicts, RS_TRACE_HEAD */

struct rs_port_stats {
	/* rx, tx and their bytes count wire frames: a super-frame counts as its segments */
	uint64_t rx;          /* frames received for this port */
	uint64_t rx_bytes;
	uint64_t tx;          /* frames sent */
	uint64_t tx_bytes;
	uint64_t ring_drops;  /* no room in the kernel to hand a frame over: RX ring full
			       * (PACKET_STATISTICS tp_drops), or a super-frame met a full receive buffer */
	uint64_t tx_full;     /* TX ring had no free slot, or a super-frame no send buffer: dropped */
	uint64_t tx_errors;   /* send() failed (e.g. link down); ring frames stay queued */
	uint64_t oversize;    /* longer than the egress MTU, or a super-frame of a kind not cut here: dropped */
	uint64_t csum_completed; /* CHECKSUM_PARTIAL frames completed before the rules */
	uint64_t gso_rx;      /* super-frames received */
	uint64_t gso_tx;      /* super-frames sent whole (the kernel or the NIC cuts them) */
};

struct rs_forwarder_stats {
	struct rs_port_stats port[2]; /* a, b */
	uint64_t not_ours;    /* frames on a port's interface that belong to no port */
	uint64_t queued;      /* frames waiting in the delay queue now */
	uint64_t pool_full;   /* delayed frames dropped: no buffer left */
	uint64_t pool_frames; /* buffers in the delay pool */
	/* delayed frames: how late the loop released them after their departure time
	 * (ppoll wake-up and loop), count by bound: < 1, 2, 5, 10, 20, 50, 100 us, more */
	uint64_t late_hist[8];
	uint64_t late_max_ns;
	uint64_t late_sum_ns;
	uint64_t hook_queued;   /* frames handed to the Python hooks */
	uint64_t hook_overflow; /* hook frames dropped: the queue to Python was full */
	uint64_t hook_returned; /* frames the hooks sent back to the loop */
	uint64_t loops;
};

/* A frame on its way to a Python hook, or back from one (the slow path). */
struct rs_hook_meta {
	uint64_t timestamp_ns; /* receive time, CLOCK_MONOTONIC (forwarder.c, rx_time) */
	uint32_t len;
	uint16_t rule, gen;    /* the rule that called the hook, under program generation gen */
	uint8_t port, pcp;     /* to Python: ingress port (0 a, 1 b); back: egress port */
};

/* a ring slot (frame_size below): a power of two of at least RS_RING_MIN_SLOT bytes, with room
 * for a frame of the MTU and RS_RING_SLOT_ROOM more (Ethernet header, two tags, the ring's
 * header and the virtio_net_hdr) */
#define RS_RING_MIN_SLOT  2048
#define RS_RING_SLOT_ROOM (14 + 8 + 128)

/* how frames reach the loop (rs_forwarder_config.carrier) */
#define RS_CARRIER_PACKET 0   /* AF_PACKET and PACKET_MMAP rings: ring mode */
#define RS_CARRIER_XDP    1   /* AF_XDP sockets fed by an XDP program: XDP mode */

/* rs_forwarder_carrier_flags: how XDP mode meets a port's interface */
#define RS_XDP_NATIVE   1     /* the program runs in the driver, before any socket buffer (else: generic XDP) */
#define RS_XDP_ZEROCOPY 2     /* the driver fills the UMEM itself (else: the kernel copies into it) */

struct rs_forwarder_config {
	const char *ifname[2];  /* interface of port a, b (may be the same in trunk form) */
	uint32_t vlan[2];       /* trunk form: the port's VLAN id; 0: plain or VLAN interface */
	uint32_t mtu[2];        /* egress MTU of each port */
	uint32_t frame_size;    /* ring slot size, a power of two >= RS_RING_MIN_SLOT: a frame of the MTU (larger ones
				 * come through the socket, link.c) */
	uint32_t ring_frames;   /* slots per ring */
	uint32_t pool_frames;   /* buffers for delayed frames */
	uint64_t busy_poll_ns;  /* keep polling the rings this long after the last frame before sleeping */
	uint32_t carrier;       /* RS_CARRIER_*; XDP: plain ports only, each interface with one receive queue */
};

struct rs_forwarder;

/* Opens sockets and rings; on error returns NULL and writes why into err. */
struct rs_forwarder *rs_forwarder_open(const struct rs_forwarder_config *cfg, char *err, uint32_t errlen);

/* Makes state, set up for prog (verified; read here only, for what its rules need of the wire), run
 * the next frames. The caller keeps state alive. state is the engine's (struct rs_state and the rules' states, rs_program.h): super-frames that
 * run the rules once get their counters made what the segments would have given. */
void rs_forwarder_set_program(struct rs_forwarder *fw, const uint8_t *prog, uint32_t len, void *state);

/* Forwards for up to timeout_ms (or until rs_forwarder_stop); returns frames handled, or -errno. */
int rs_forwarder_run(struct rs_forwarder *fw, int timeout_ms);

/* Asks a running rs_forwarder_run to return (safe from another thread or a signal handler). */
void rs_forwarder_stop(struct rs_forwarder *fw);

void rs_forwarder_stats(struct rs_forwarder *fw, struct rs_forwarder_stats *out);

/* Grows the delay pool to frames buffers (never shrinks); 0 or -ENOMEM (the old pool stays). Between runs only. */
int rs_forwarder_set_pool(struct rs_forwarder *fw, uint32_t frames);

/* Frames of rules 0..n-1 of the running program waiting in the delay queue now. */
void rs_forwarder_rule_held(struct rs_forwarder *fw, uint32_t *out, uint32_t n);

/*
 * The slow path. rs_forwarder_set_hooks marks the rules (flags[i] != 0) whose
 * frames go to Python after the engine's actions; frames of other rules never
 * do. A worker thread sleeps on rs_forwarder_hook_fd (an eventfd), takes frames
 * with rs_forwarder_hook_take and gives back what leaves with rs_forwarder_hook_put
 * (one producer and one consumer on each side). rs_forwarder_generation is the
 * program generation that rs_hook_meta.gen refers to.
 */
void rs_forwarder_set_hooks(struct rs_forwarder *fw, const uint8_t *flags, uint32_t n);
int rs_forwarder_hook_fd(struct rs_forwarder *fw);
int rs_forwarder_hook_take(struct rs_forwarder *fw, struct rs_hook_meta *m, uint8_t *buf, uint32_t cap);
int rs_forwarder_hook_put(struct rs_forwarder *fw, const struct rs_hook_meta *m, const uint8_t *frame);
void rs_forwarder_hook_wake(struct rs_forwarder *fw);
uint32_t rs_forwarder_generation(struct rs_forwarder *fw);

/*
 * Tracing (`reshaper trace`, trace_buffer.c): while it is on, each frame the
 * rules see (of one rule, or all) leaves a record in a buffer of
 * RS_TRACE_SLOTS that a Python thread empties with rs_forwarder_trace_take
 * (one producer, one consumer). A frame that finds the buffer full is not
 * recorded, only counted. Off, it costs the loop one test per frame.
 */
#define RS_TRACE_SLOTS 1024

struct rs_trace_record {
	uint64_t timestamp_ns;  /* receive time, CLOCK_MONOTONIC */
	uint64_t delay_ns;      /* the verdict's (struct rs_verdict) */
	int32_t rule;           /* the rule it met, -1: none (Python names it before a reload: bridge/trace.py) */
	uint32_t len;           /* as it arrived (a super-frame's whole length) */
	uint16_t copies;
	uint8_t port;           /* ingress: 0 a, 1 b */
	uint8_t verdict, reason; /* RS_V_*, RS_R_* */
	uint8_t caplen;         /* bytes in head */
	uint8_t head[RS_TRACE_HEAD]; /* rs_program.h */
};

/* Traces the frames of rule (of the running program), or of every rule and none when rule < 0;
 * on == 0 stops. */
void rs_forwarder_set_trace(struct rs_forwarder *fw, int on, int32_t rule);
/* Up to max records into out; returns how many. */
uint32_t rs_forwarder_trace_take(struct rs_forwarder *fw, struct rs_trace_record *out, uint32_t max);
/* Frames not recorded while tracing was on: the buffer was full. */
uint64_t rs_forwarder_trace_lost(struct rs_forwarder *fw);

/* RS_XDP_* of port (0 a, 1 b) in XDP mode; 0 in ring mode. */
uint32_t rs_forwarder_carrier_flags(struct rs_forwarder *fw, int port);

/* Sends every queued frame now (used on exit) and closes everything. */
void rs_forwarder_close(struct rs_forwarder *fw);

#endif /* RS_RING_H */
