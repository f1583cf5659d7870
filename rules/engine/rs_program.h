/* SPDX-License-Identifier: GPL-2.0 OR MIT */
/*
 * reshaper rule program: format constants, state layout and engine API.
 *
 * This header is the single definition of the program format. The Python
 * compiler (rules/compiler.py) reads every constant below through the cffi
 * extension, the kernel module and the fuzz harness include it directly.
 * PROGRAM.md beside this file describes the layout in prose.
 *
 * Only constants, fixed-width types and prototypes: it must compile
 * freestanding (no libc), in the kernel and in user space.
 */
#ifndef RS_PROGRAM_H
#define RS_PROGRAM_H

#include "rs_compat.h"

/* ---- header ------------------------------------------------------------ */
#define RS_MAGIC            0x50485352u /* "RSHP" read as little-endian u32 */
#define RS_VERSION          2
#define RS_HDR_LEN          16
#define RS_RULE_HDR_LEN     8
#define RS_OP_HDR_LEN       2
#define RS_MAX_PROGRAM_LEN  65536
#define RS_MAX_RULES        1024
#define RS_MAX_OPS          64      /* per rule, match and action each */

/* header flags */
#define RS_PF_DEFAULT_DROP   0x0001 /* frames no rule matches are dropped */
#define RS_PF_FWD_A_TO_B     0x0002
#define RS_PF_FWD_B_TO_A     0x0004
#define RS_PF_MALFORMED_DROP 0x0008 /* malformed frames dropped, else passed */
#define RS_PF_ALL            0x000f

/* rule header: from */
#define RS_FROM_ANY 0
#define RS_FROM_A   1
#define RS_FROM_B   2

/* rule flags */
#define RS_RF_REORDER_ON_JITTER 0x01 /* jitter may reorder frames (netem) */
#define RS_RF_SCHEDULE          0x02 /* phases follow the action ops; header bytes 6-7: their number */
#define RS_RF_REPEAT            0x04 /* the schedule starts over after its last phase (else that holds) */
#define RS_RF_KEEP_TIME         0x08 /* its time zero is the first load's, which a reload keeps */
#define RS_RF_ALL               0x0f

/* a phase of a schedule: u64 duration_ns, u8 number of action ops, u8 flags, u16 its length in
 * bytes (this header included), then its action ops */
#define RS_PHASE_HDR_LEN 12
#define RS_PHF_OWN       0x01 /* the phase runs the rule's own action ops (it has none) */
#define RS_PHF_ALL       0x01
#define RS_MAX_PHASES    4096
#define RS_MAX_PHASE_NS  86400000000000ull /* a day */

/* ports, as passed to rs_run() */
#define RS_PORT_A 1
#define RS_PORT_B 2

/* ---- match ops ----------------------------------------------------------- */
#define RS_M_ETH        0x01 /* u8 which, mac[6], mask[6]                  len 13 */
#define RS_M_RANGE      0x02 /* u8 field, u8 n, n x (u16 lo, u16 hi)       len 2+4n */
#define RS_M_HAS_VLAN   0x03 /* frame carries an inner 802.1Q/802.1ad tag  len 0 */
#define RS_M_IP         0x04 /* u8 which, u8 family, addr[a], mask[a]      len 2+2a, a 4 (IPv4) or 16 */
#define RS_M_TCP_FLAGS  0x05 /* u8 mask, u8 value                          len 2 */
#define RS_M_BYTES      0x06 /* u8 base, u16 offset, u8 n, val[n], mask[n] len 4+2n */

/* ---- action ops ---------------------------------------------------------- */
#define RS_A_SET_ETH    0x40 /* u8 which, mac[6]                           len 7 */
#define RS_A_SET_IP     0x41 /* u8 which, u8 family, addr[a]               len 2+a */
#define RS_A_SET_FIELD  0x42 /* u8 field, u16 value                        len 3 */
#define RS_A_DEC_TTL    0x43 /*                                            len 0 */
#define RS_A_PUSH_VLAN  0x44 /* u16 tpid, u16 tci                          len 4 */
#define RS_A_POP_VLAN   0x45 /*                                            len 0 */
#define RS_A_PAYLOAD    0x46 /* u8 base, u16 offset, u8 n, val[n], mask[n] len 4+2n */
#define RS_A_TRUNCATE   0x47 /* u16 length                                 len 2 */
#define RS_A_DROP       0x48 /*                                            len 0 */
#define RS_A_DUPLICATE  0x49 /* u8 copies, u32 prob                        len 5 */
#define RS_A_CORRUPT    0x4a /* u32 prob                                   len 4 */
#define RS_A_LOSS       0x4b /* u32 prob, u32 corr                         len 8 */
#define RS_A_LOSS_GE    0x4c /* u32 p, u32 r, u32 h, u32 k                 len 16 */
#define RS_A_DELAY      0x4d /* u64 time_ns, u64 jitter_ns, u8 dist, u32 corr  len 21 */
#define RS_A_REORDER    0x4e /* u32 prob, u32 gap; must precede RS_A_DELAY len 8 */
#define RS_A_RATE       0x4f /* u64 bits_per_s, i16 overhead, u16 limit    len 12 */
#define RS_A_RATE_TRACE 0x50 /* u16 trace, i16 overhead, u16 limit         len 6 */

/*
 * delivery traces of RS_A_RATE_TRACE (mahimahi's format, PROGRAM.md "Delivery traces"): after the
 * rules, as many as the header's count (bytes 10-11), each: u32 its length in bytes (this header
 * included), u32 period_ms, u32 n, then n x u16: each opportunity's milliseconds after the one
 * before (the first's after the period's start). An opportunity carries RS_TRACE_OPP_BYTES.
 */
#define RS_TRACE_HDR_LEN   12
#define RS_MAX_TRACES      16
#define RS_MAX_TRACE_MS    86400000u   /* a day */
#define RS_TRACE_OPP_BYTES 1514        /* a 1500-byte packet with its Ethernet header */

/* which (RS_M_ETH, RS_M_IP, RS_A_SET_ETH, RS_A_SET_IP) */
#define RS_SRC 0
#define RS_DST 1

/* IP families */
#define RS_FAMILY_IPV4 4
#define RS_FAMILY_IPV6 6

/* fields of RS_M_RANGE and RS_A_SET_FIELD */
#define RS_F_ETH_TYPE  1  /* ethertype after inner tags (match only) */
#define RS_F_VLAN      2  /* VID of the first inner tag */
#define RS_F_VLAN_PCP  3  /* PCP of the first inner tag */
#define RS_F_IP_PROTO  4  /* IPv4 protocol / IPv6 upper-layer header (match only) */
#define RS_F_SRC_PORT  5  /* TCP/UDP */
#define RS_F_DST_PORT  6
#define RS_F_DSCP      7
#define RS_F_TTL       8  /* IPv4 TTL / IPv6 hop limit */
#define RS_F_LENGTH    9  /* frame length in bytes (match only) */
#define RS_F_ECN       10 /* set only */
#define RS_F_MAX       10
#define RS_MAX_RANGES  16

/* the largest value RS_A_SET_FIELD may write: the width of each header field */
#define RS_MAX_VLAN     4095
#define RS_MAX_VLAN_PCP 7
#define RS_MAX_DSCP     63
#define RS_MAX_ECN      3
#define RS_MAX_TTL      255

/* frames as the program sees them: Ethernet, inner tags with one of these TPIDs,
 * and the network and transport protocols the engine parses */
#define RS_ETH_HLEN     14
#define RS_VLAN_HLEN    4      /* a tag: TPID and TCI */
#define RS_ETH_P_8021Q  0x8100
#define RS_ETH_P_8021AD 0x88a8
#define RS_ETH_P_IP     0x0800
#define RS_ETH_P_IPV6   0x86dd
#define RS_IPPROTO_ICMP   1
#define RS_IPPROTO_TCP    6
#define RS_IPPROTO_UDP    17
#define RS_IPPROTO_ICMPV6 58

/* bases of RS_M_BYTES and RS_A_PAYLOAD */
#define RS_BASE_L2 0
#define RS_BASE_L3 1
#define RS_BASE_L4 2
#define RS_MAX_BYTES 32
#define RS_MAX_OFFSET 0xfffe /* of RS_M_BYTES and RS_A_PAYLOAD, from the base */

/* delay distributions */
#define RS_DIST_UNIFORM      0
#define RS_DIST_NORMAL       1
#define RS_DIST_PARETO       2
#define RS_DIST_PARETONORMAL 3

/* probabilities: an event happens when rs_prng_u32() < p; 0xffffffff = always */
#define RS_PROB_ALWAYS 0xffffffffu

#define RS_MAX_COPIES 16
#define RS_MAX_RATE_LIMIT 65535
#define RS_MAX_DELAY_NS 60000000000ull /* 60 s, time and jitter each */
#define RS_MAX_FRAME 65535
/* room a frame's buffer keeps past the frame, which push_vlan makes longer (rs_run's cap) */
#define RS_FRAME_ROOM 64
/* bytes of a frame, as it arrived, that `reshaper trace` shows: ring mode's records (ring/ring.h)
 * and the kernel module's tracepoint keep as many */
#define RS_TRACE_HEAD 128

/* ---- verdict ------------------------------------------------------------- */
#define RS_V_FORWARD 0
#define RS_V_DROP    1

/* reason, why a frame was dropped (or RS_R_NONE) */
#define RS_R_NONE       0
#define RS_R_DEFAULT    1 /* no rule matched and default is drop */
#define RS_R_RULE       2 /* drop action */
#define RS_R_LOSS       3 /* loss action */
#define RS_R_QUEUE      4 /* rate queue full */
#define RS_R_TTL        5 /* dec_ttl at TTL <= 1 */
#define RS_R_MALFORMED  6 /* malformed and malformed: drop */
#define RS_R_DIRECTION  7 /* forward: does not allow this direction */

/* verdict flags */
#define RS_VF_MODIFIED   0x01 /* frame bytes or length changed */
#define RS_VF_CORRUPTED  0x02
#define RS_VF_REORDERED  0x04 /* sent ahead of the delay queue by reorder */
#define RS_VF_SKIPPED    0x08 /* an action could not apply to this frame */
#define RS_VF_MALFORMED  0x10

struct rs_verdict {
	uint32_t verdict;  /* RS_V_* */
	uint32_t reason;   /* RS_R_* */
	uint32_t len;      /* frame length after the actions */
	uint32_t copies;   /* extra copies to send (duplicate) */
	int32_t rule;      /* index of the matching rule, -1 for none */
	uint32_t flags;    /* RS_VF_* */
	uint64_t delay_ns; /* send this long after now_ns (0: at once) */
};

/* ---- state -----------------------------------------------------------------
 * Everything the engine remembers between frames lives in one caller-owned
 * buffer of the size rs_program_verify() gives: the PRNG, counters, per-rule
 * timing state, the rate queues, the loaded form and a copy of the program,
 * which is what rs_run() runs (a state cannot meet another program). The
 * engine never allocates.
 */
/*
 * The engine counts each frame once, by the way it went: malformed, from a port that does not
 * forward (direction), matched by no rule, or matched by a rule (struct rs_rule_state's matched,
 * and its dropped, lost or queue_drops when the rule dropped it). What left, what was dropped and
 * what came in are sums of those (rules/binding.py's engine_counters, with the program's flags the
 * state keeps: default and malformed drop or pass), not counts a frame pays for: two counts a frame
 * fewer, each 4 instructions on a 32-bit CPU (bench/engine.py, armhf: the five-rule mix -6, the
 * last of 250 per-host rules -14).
 */
struct rs_counters {
	uint64_t malformed;
	uint64_t unmatched;
	uint64_t direction;	/* from a port the program does not forward (RS_R_DIRECTION) */
};

struct rs_rule_state {
	/* counters */
	uint64_t matched;
	uint64_t bytes;       /* bytes of matched frames, as received */
	uint64_t dropped;     /* drop action and dec_ttl expiry */
	uint64_t lost;        /* loss action */
	uint64_t queue_drops; /* rate limit reached */
	uint64_t duplicated;  /* extra copies made */
	uint64_t corrupted;
	uint64_t reordered;
	uint64_t delayed;
	uint64_t skipped;     /* actions that could not apply */
	/* timing state */
	uint64_t last_departure; /* keeps order under jitter */
	uint64_t rate_busy_until;
	uint32_t loss_last;      /* correlated loss: the last frame was lost */
	uint32_t delay_last;
	uint32_t reorder_count;
	uint32_t ge_bad;         /* Gilbert-Elliott: in the bad state */
	uint32_t rate_head;      /* rate queue: oldest entry */
	uint32_t rate_count;     /* rate queue: entries */
	uint32_t rate_limit;     /* rate queue: capacity (0: rule has no rate) */
	uint32_t rate_queue;     /* byte offset of its u64 departure times in the state */
	/* delivery trace (RS_A_RATE_TRACE): the opportunity in use, at rate_busy_until, and its bytes left */
	uint32_t trace_at;       /* its index in the trace */
	uint32_t trace_left;
	uint64_t trace_cycle;    /* the start of its period */
	/* schedule (RS_RF_SCHEDULE): the phase frames arriving in [phase_start, phase_end) get */
	uint64_t phase_start;
	uint64_t phase_end;      /* 0: not found yet */
	uint64_t cycle_ns;       /* the phases' durations added up */
	uint32_t phase;          /* its index */
	uint32_t phase_act;      /* its first action op's offset in the rule; 0: the rule's own (RS_PHF_OWN) */
	uint32_t phase_nops;     /* its number of action ops */
	uint32_t phases;         /* offset of the first phase in the rule */
};

/* the frame classes (engine.c, "frame classes"); the loaded form has subtables for each class of
 * frame, from Ethernet or in RS_RUN_L3, on each port it arrives on */
#define RS_CLASSES 7
#define RS_FORM_CLASSES (2 * 2 * RS_CLASSES)

struct rs_state {
	uint32_t prng[4];
	uint32_t n_rules;
	uint32_t size;
	struct rs_counters counters;
	/* time zero of schedules (rs_state_start, or the first frame's time): this load's and the first */
	uint64_t epoch_load;
	uint64_t epoch_first;
	uint32_t epoch_set;
	uint32_t traces;	/* offset of the program's first delivery trace (after its rules) */
	uint32_t prog;		/* the byte offset of the state's copy of its program, which rs_run runs */
	/* the loaded form (engine.c): the classifier rs_state_init builds from the program */
	uint32_t form;		/* its byte offset in the state */
	uint32_t subs;		/* the byte offsets of its subtables */
	uint32_t pool;		/* and of its pool of words (indexed from the state's start) */
	uint16_t form_flags;	/* what the program needs of a frame (engine.c's RS_FORM_*) */
	uint16_t prog_flags;	/* the program's RS_PF_* (struct rs_counters) */
	/* the subtables of form class c (engine.c's RS_FORM_CLASS) start at byte class_at[c] of the
	 * state (an offset, not an index: no scaling a frame) and end at one whose first rule is
	 * engine.c's RS_SUB_END */
	uint32_t class_at[RS_FORM_CLASSES];
	/* struct rs_rule_state rules[n_rules]; then the rate queues; then the loaded form */
};

/* ---- API ---------------------------------------------------------------- */
/* error codes of rs_program_verify (negative) */
#define RS_E_SHORT     1  /* shorter than its header or its declared length */
#define RS_E_MAGIC     2
#define RS_E_VERSION   3
#define RS_E_FLAGS     4  /* unknown header or rule flag, reserved not 0 */
#define RS_E_RULES     5  /* rule count or rule length wrong */
#define RS_E_OPCODE    6  /* unknown opcode, or a match op among actions */
#define RS_E_OPLEN     7  /* operand length wrong for the opcode */
#define RS_E_OPERAND   8  /* an operand out of its range */
#define RS_E_ORDER     9  /* reorder not followed by delay, or a timing op twice */
#define RS_E_TRACE     10 /* a delivery trace malformed, or named and not there */

/* Checks prog completely. Returns 0 and sets *state_size, or -RS_E_*. */
int rs_program_verify(const uint8_t *prog, uint32_t len, uint32_t *state_size);

/* What RS_E_* code (positive) means, in words; the one text user space and the module show. */
const char *rs_verify_strerror(int code);

/* Zeroes state (size from rs_program_verify), copies prog into it, verifies the copy, builds the
 * loaded form and seeds the PRNG. A state it could not set up stays empty: rs_run() passes frames. */
void rs_state_init(const uint8_t *prog, uint32_t prog_len, void *state,
		   uint32_t state_size, uint64_t seed);

/*
 * Sets time zero of the program's schedules, on the clock of rs_run's now_ns: load_ns when it was
 * loaded, first_ns when the first program of this run was (rules with RS_RF_KEEP_TIME count from
 * that). Without it, the first frame's now_ns is both (`reshaper apply`).
 */
void rs_state_start(void *state, uint64_t load_ns, uint64_t first_ns);

/*
 * The most bytes push_vlan ops add to one frame in one rule of a verified program (one action
 * list: the rule's own or a phase's), for carriers that must leave the room.
 */
uint32_t rs_program_push_room(const uint8_t *prog);

#define RS_RUN_L3 0x01 /* frame starts at the IP header (NFQUEUE) */

/*
 * Runs the program state was set up for (rs_state_init) over one frame of len
 * bytes in a buffer of cap bytes (cap >= len; room past len lets push_vlan grow
 * the frame): no program argument, which took a check a frame (bench/engine.py:
 * the five-rule mix 9 instructions less on x86_64 and on armhf). The frame
 * is rewritten in place; v->len is its new length. now_ns is the frame's
 * receive time, on any clock the carrier keeps for its delays.
 */
void rs_run(void *state, uint8_t *frame, uint32_t len, uint32_t cap, uint32_t port,
	    uint32_t run_flags, uint64_t now_ns, struct rs_verdict *v);

/*
 * The same, finding the first matching rule the straightforward way: every
 * rule in turn, its ops read from the program. The reference rs_run() is held
 * to (rules/engine/fuzz_engine.c); carriers call rs_run().
 */
void rs_run_reference(void *state, uint8_t *frame, uint32_t len, uint32_t cap, uint32_t port,
		      uint32_t run_flags, uint64_t now_ns, struct rs_verdict *v);

/*
 * One frame's way through rs_run_reference(), step by step, for `reshaper
 * explain`: the engine that forwards writes it (rs_run() has no such step:
 * its tracing is compiled out, not skipped). Events in order, as many as fit:
 *   RS_T_PARSE   a: ethertype, b: tags | IP version << 8 | protocol << 16,
 *                c: IP header offset | L4 header offset << 16 (0: none),
 *                d: L4 header length (0: none parsed); rule: 1 if malformed
 *   RS_T_RULE    rule: its index; a: 1 matched, 0 not; b: the index of the
 *                match op that failed (RS_T_FROM: the rule's from), c: 1 if
 *                that op read a field (RS_M_RANGE), d: the value it read
 *   RS_T_ACTION  rule, a: the action op's index in the rule, b: its opcode,
 *                c: the frame's length after it, d: the drop reason it gave
 *                (RS_R_*, RS_R_NONE: none); the frame after it is copied to
 *                frames + k * frame_cap for the k-th action, if k < nframes
 */
#define RS_T_PARSE  1
#define RS_T_RULE   2
#define RS_T_ACTION 3
#define RS_T_FROM   0xffffffffu

struct rs_trace_event {
	uint32_t kind, rule, a, b, c, d;
};

struct rs_trace {
	struct rs_trace_event *ev;
	uint32_t cap, n;		/* room for events, events written (n may pass cap: the rest is lost) */
	uint8_t *frames;
	uint32_t frame_cap, nframes;	/* bytes per copy of the frame, copies there is room for */
};

void rs_run_traced(void *state, uint8_t *frame, uint32_t len, uint32_t cap, uint32_t port,
		   uint32_t run_flags, uint64_t now_ns, struct rs_verdict *v, struct rs_trace *trace);

/*
 * The index of the rule rs_run() would apply to this frame, changing nothing:
 * -1 when none would, or the frame would not reach the rules (direction,
 * malformed). For a carrier that must keep that one rule's counters from
 * before a run (ring/super_frames.c).
 */
int32_t rs_rule_for(const void *state, uint8_t *frame, uint32_t len, uint32_t port, uint32_t run_flags);

/*
 * Computes the TCP/UDP/ICMPv6 checksum of a frame from scratch, for frames
 * whose checksum the kernel left to be done (TP_STATUS_CSUMNOTREADY).
 * Returns 1 when it wrote one, 0 when the frame has none to compute.
 */
int rs_csum_complete(uint8_t *frame, uint32_t len, uint32_t run_flags);

/*
 * The same for a frame that may or may not be CHECKSUM_PARTIAL, where the
 * carrier cannot tell (XDP): computed only when the field holds exactly the
 * pseudo-header sum and does not add up. 1 when it wrote one.
 */
int rs_csum_complete_seeded(uint8_t *frame, uint32_t len, uint32_t run_flags);

#endif /* RS_PROGRAM_H */
