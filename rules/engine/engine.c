// SPDX-License-Identifier: GPL-2.0 OR MIT
/*
 * reshaper rule engine: verifies and runs a rule program (PROGRAM.md).
 *
 * Freestanding: no libc, no allocation, no floating point, no global
 * mutable state, no recursion. The same file builds into the cffi
 * extension, the kernel module and the fuzz harness. After
 * rs_program_verify() accepted a program, rs_run() reads and writes only
 * inside prog, the state and frame[0..cap), whatever the frame holds.
 *
 * Byte order: program integers are little-endian, frame fields big-endian.
 *
 * Points PROGRAM.md leaves open, decided here (the Python model mirrors them):
 * - order per frame: port without its FWD_* flag (or not A/B)
 *   drops (DIRECTION); len > cap or > 65535 or a parse failure is malformed;
 *   then rules. A truncated inner tag is malformed; a bad TCP data offset
 *   or a short L4 header only means "no L4 header". L3 mode: version nibble
 *   not 4/6 is malformed.
 * - base L2 is the buffer start (the IP header in L3 mode); L3/L4 bytes end
 *   at the IP packet's end, never in padding. Base L4 exists in first
 *   fragments after all extension headers, whatever the protocol.
 * - a write overlapping a checksum field skips that checksum for the whole
 *   write; the pseudo-header tracks the addresses only.
 * - push/pop/truncate re-parse; a frame made unparsable keeps its tags and
 *   ethertype but loses its IP fields (it is not re-classified malformed).
 * - every probability draws one u32, also for 0 and 0xffffffff.
 * - a dropped frame (drop, dec_ttl, loss, rate) has copies 0; duplicated
 *   counts only copies that leave. Drop reasons stop the remaining actions.
 * - departure starts at now; delay adds its offset to it, rate starts at
 *   max(departure, busy_until). Reorder: netem (gap 0: never reorder).
 */
#include "rs_program.h"
#include "rs_dist_tables.h"

#define RS_MAX_TAGS	2
#define RS_MAX_EXTHDRS	8
#define RS_NSEC_PER_SEC	1000000000ull

/* ---- byte access ---- */

/*
 * Bytes in the CPU's order: __builtin_memcpy becomes a plain load at any
 * alignment where the CPU allows it (x86, ARMv7), byte loads where it does
 * not. Frame words are read so for one's complement sums, which are the same in
 * either order (RFC 1071, byte order independence): a checksum updated from
 * words read this way is written back this way, with no swap.
 */
static uint32_t rs_ne16(const uint8_t *b)
{
	uint16_t v;

	__builtin_memcpy(&v, b, 2);
	return v;
}

static uint32_t rs_ne32(const uint8_t *b)
{
	uint32_t v;

	__builtin_memcpy(&v, b, 4);
	return v;
}

/* Program integers are little-endian (PROGRAM.md): on a little-endian CPU one load reads them. */
#ifdef RS_LITTLE_ENDIAN
static uint32_t rs_le16(const uint8_t *b)
{
	return rs_ne16(b);
}

static uint32_t rs_le32(const uint8_t *b)
{
	return rs_ne32(b);
}

static uint64_t rs_le64(const uint8_t *b)
{
	uint64_t v;

	__builtin_memcpy(&v, b, 8);
	return v;
}
#else
static uint32_t rs_le16(const uint8_t *b)
{
	return (uint32_t)b[0] | (uint32_t)b[1] << 8;
}

static uint32_t rs_le32(const uint8_t *b)
{
	return rs_le16(b) | rs_le16(b + 2) << 16;
}

static uint64_t rs_le64(const uint8_t *b)
{
	return (uint64_t)rs_le32(b) | (uint64_t)rs_le32(b + 4) << 32;
}
#endif

static uint32_t rs_be16(const uint8_t *b)
{
	return (uint32_t)b[0] << 8 | b[1];
}

static uint32_t rs_be32(const uint8_t *b)
{
	return rs_be16(b) << 16 | rs_be16(b + 2);
}

/* The 16-bit value v (as rs_be16 reads it) as rs_ne16 reads its bytes, for comparing and masking
 * frame words without swapping them: folded for a constant, one swap for a variable. */
static inline __attribute__((__always_inline__)) uint32_t rs_ne16_of(uint32_t v)
{
#ifdef RS_LITTLE_ENDIAN
	return __builtin_bswap16((uint16_t)v);
#else
	return v & 0xffff;
#endif
}

/* The 32-bit value v (as rs_be32 reads it) as rs_ne32 reads its bytes. */
static uint32_t rs_ne32_of(uint32_t v)
{
#ifdef RS_LITTLE_ENDIAN
	return __builtin_bswap32(v);
#else
	return v;
#endif
}

static void rs_put_ne16(uint8_t *b, uint32_t v)
{
	uint16_t w = (uint16_t)v;

	__builtin_memcpy(b, &w, 2);
}

#if defined(RS_CPU32) && defined(RS_LITTLE_ENDIAN)
/* a 32-bit word of a 64-bit counter (rs_count) */
typedef uint32_t rs_count_word __attribute__((__may_alias__));

/* rs_count's carry into a counter's high word: a call, which GCC does not turn into conditional
 * instructions that every count would run (it did for an increment in place: the mix 5 more) */
static __attribute__((__noinline__, __cold__)) void rs_count_carry(rs_count_word *w)
{
	w[1]++;
}
#endif

/* A 64-bit counter plus n. On a 32-bit little-endian CPU, the board's, an add to its low word and
 * a carry into the high word only when that wraps: 4 instructions, where a 64-bit add is 6 on ARM
 * (armhf's mix 280 -> 275, the last of 250 per-host rules 316 -> 306; bench/engine.py). It stays a
 * uint64_t for whoever reads it (tests/helpers/counter_carry.py). */
static inline __attribute__((__always_inline__)) void rs_count(uint64_t *c, uint32_t n)
{
#if defined(RS_CPU32) && defined(RS_LITTLE_ENDIAN)
	rs_count_word *w = (rs_count_word *)(void *)c;
	uint32_t lo;
	int carry = __builtin_add_overflow(w[0], n, &lo);	/* the add's carry flag, no compare */

	w[0] = lo;
	if (carry)
		rs_count_carry(w);
#else
	*c += n;
#endif
}

/* ---- verifier ---- */

/* timing ops a rule may hold once each (loss and loss_ge are one loss) */
#define RS_T_LOSS    0x1
#define RS_T_DELAY   0x2
#define RS_T_REORDER 0x4
#define RS_T_RATE    0x8

/* Fixed operand length of each opcode; -1: variable, -2: unknown. */
static int rs_op_fixed_len(uint32_t op)
{
	switch (op) {
	case RS_M_ETH:		return 13;
	case RS_M_HAS_VLAN:	return 0;
	case RS_M_TCP_FLAGS:	return 2;
	case RS_M_RANGE:
	case RS_M_IP:
	case RS_M_BYTES:
	case RS_A_SET_IP:
	case RS_A_PAYLOAD:	return -1;
	case RS_A_SET_ETH:	return 7;
	case RS_A_SET_FIELD:	return 3;
	case RS_A_DEC_TTL:	return 0;
	case RS_A_PUSH_VLAN:	return 4;
	case RS_A_POP_VLAN:	return 0;
	case RS_A_TRUNCATE:	return 2;
	case RS_A_DROP:		return 0;
	case RS_A_DUPLICATE:	return 5;
	case RS_A_CORRUPT:	return 4;
	case RS_A_LOSS:		return 8;
	case RS_A_LOSS_GE:	return 16;
	case RS_A_DELAY:	return 21;
	case RS_A_REORDER:	return 8;
	case RS_A_RATE:		return 12;
	case RS_A_RATE_TRACE:	return 6;
	}
	return -2;
}

static int rs_is_match_op(uint32_t op)
{
	return op >= RS_M_ETH && op <= RS_M_BYTES;
}

/* Operand length check; o is inside the rule, n its length. */
static int rs_verify_oplen(uint32_t op, const uint8_t *o, uint32_t n)
{
	int fixed = rs_op_fixed_len(op);

	if (fixed >= 0)
		return n == (uint32_t)fixed ? 0 : -RS_E_OPLEN;
	if (op == RS_M_RANGE)
		return n >= 2 && n == 2 + 4 * (uint32_t)o[1] ? 0 : -RS_E_OPLEN;
	if (op == RS_M_IP || op == RS_A_SET_IP) {
		/* addresses (and masks) of the family's length; an unknown family is an operand error */
		uint32_t a = n >= 2 && o[1] == RS_FAMILY_IPV4 ? 4 : 16;

		return n >= 2 && n == 2 + a * (op == RS_M_IP ? 2 : 1) ? 0 : -RS_E_OPLEN;
	}
	/* RS_M_BYTES, RS_A_PAYLOAD */
	return n >= 4 && n == 4 + 2 * (uint32_t)o[3] ? 0 : -RS_E_OPLEN;
}

static int rs_verify_bytes_op(const uint8_t *o)
{
	if (o[0] > RS_BASE_L4 || rs_le16(o + 1) > RS_MAX_OFFSET)
		return -RS_E_OPERAND;
	return o[3] >= 1 && o[3] <= RS_MAX_BYTES ? 0 : -RS_E_OPERAND;
}

static int rs_verify_set_field(const uint8_t *o)
{
	uint32_t v = rs_le16(o + 1);

	switch (o[0]) {
	case RS_F_DSCP:		return v <= RS_MAX_DSCP ? 0 : -RS_E_OPERAND;
	case RS_F_ECN:		return v <= RS_MAX_ECN ? 0 : -RS_E_OPERAND;
	case RS_F_TTL:		return v <= RS_MAX_TTL ? 0 : -RS_E_OPERAND;
	case RS_F_SRC_PORT:
	case RS_F_DST_PORT:	return 0;
	case RS_F_VLAN:		return v <= RS_MAX_VLAN ? 0 : -RS_E_OPERAND;
	case RS_F_VLAN_PCP:	return v <= RS_MAX_VLAN_PCP ? 0 : -RS_E_OPERAND;
	}
	return -RS_E_OPERAND;
}

/* Operand ranges; the length is already right. ntraces: the program's delivery traces. */
static int rs_verify_operands(uint32_t op, const uint8_t *o, uint32_t ntraces)
{
	uint32_t i;

	switch (op) {
	case RS_M_ETH:
	case RS_A_SET_ETH:
		return o[0] <= RS_DST ? 0 : -RS_E_OPERAND;
	case RS_M_IP:
	case RS_A_SET_IP:
		if (o[0] > RS_DST)
			return -RS_E_OPERAND;
		return o[1] == RS_FAMILY_IPV4 || o[1] == RS_FAMILY_IPV6 ?
			0 : -RS_E_OPERAND;
	case RS_M_RANGE:
		/* ECN is settable only; every other field can be matched */
		if (o[0] < 1 || o[0] > RS_F_MAX || o[0] == RS_F_ECN)
			return -RS_E_OPERAND;
		if (o[1] < 1 || o[1] > RS_MAX_RANGES)
			return -RS_E_OPERAND;
		for (i = 0; i < o[1]; i++)
			if (rs_le16(o + 2 + 4 * i) > rs_le16(o + 4 + 4 * i))
				return -RS_E_OPERAND;
		return 0;
	case RS_M_BYTES:
	case RS_A_PAYLOAD:
		return rs_verify_bytes_op(o);
	case RS_A_SET_FIELD:
		return rs_verify_set_field(o);
	case RS_A_PUSH_VLAN:
		/* any other TPID would hide the tag from the parser */
		return rs_le16(o) == RS_ETH_P_8021Q || rs_le16(o) == RS_ETH_P_8021AD ?
			0 : -RS_E_OPERAND;
	case RS_A_TRUNCATE:
		return rs_le16(o) >= RS_ETH_HLEN ? 0 : -RS_E_OPERAND;
	case RS_A_DUPLICATE:
		return o[0] >= 1 && o[0] <= RS_MAX_COPIES ? 0 : -RS_E_OPERAND;
	case RS_A_DELAY:
		if (rs_le64(o) > RS_MAX_DELAY_NS || rs_le64(o + 8) > RS_MAX_DELAY_NS)
			return -RS_E_OPERAND;
		return o[16] <= RS_DIST_PARETONORMAL ? 0 : -RS_E_OPERAND;
	case RS_A_RATE_TRACE:
		if (rs_le16(o) >= ntraces)
			return -RS_E_TRACE;
		return rs_le16(o + 4) >= 1 ? 0 : -RS_E_OPERAND;
	case RS_A_RATE:
		if (rs_le64(o) == 0)
			return -RS_E_OPERAND;
		return rs_le16(o + 10) >= 1 ? 0 : -RS_E_OPERAND;
	}
	return 0;
}

static uint32_t rs_timing_bit(uint32_t op)
{
	switch (op) {
	case RS_A_LOSS:
	case RS_A_LOSS_GE:	return RS_T_LOSS;
	case RS_A_DELAY:	return RS_T_DELAY;
	case RS_A_REORDER:	return RS_T_REORDER;
	case RS_A_RATE:
	case RS_A_RATE_TRACE:	return RS_T_RATE;
	}
	return 0;
}

/*
 * nops ops of rule r (rlen bytes) from *off, the first nm of them match ops: each inside the rule,
 * known, in its section, its operands right; at most one of each timing op in the list, a reorder
 * right before a delay. Moves *off past them; *limit is the list's rate queue limit (0: none).
 */
static int rs_verify_ops(const uint8_t *r, uint32_t rlen, uint32_t *off, uint32_t nm, uint32_t nops,
			 uint32_t ntraces, uint32_t *limit)
{
	uint32_t k, seen = 0, prev = 0;
	int err;

	*limit = 0;
	for (k = 0; k < nops; k++) {
		uint32_t op, n, bit, o = *off;

		if (rlen - o < RS_OP_HDR_LEN)
			return -RS_E_RULES;
		op = r[o];
		n = r[o + 1];
		if (rs_op_fixed_len(op) == -2 || rs_is_match_op(op) != (k < nm))
			return -RS_E_OPCODE;
		if (rlen - o - RS_OP_HDR_LEN < n)
			return -RS_E_RULES;
		err = rs_verify_oplen(op, r + o + 2, n);
		if (!err)
			err = rs_verify_operands(op, r + o + 2, ntraces);
		if (err)
			return err;

		bit = rs_timing_bit(op);
		if ((seen & bit) || (prev == RS_A_REORDER && op != RS_A_DELAY))
			return -RS_E_ORDER;
		seen |= bit;
		if (op == RS_A_RATE)
			*limit = rs_le16(r + o + 2 + 10);
		if (op == RS_A_RATE_TRACE)
			*limit = rs_le16(r + o + 2 + 4);
		prev = op;
		*off = o + RS_OP_HDR_LEN + n;
	}
	return prev == RS_A_REORDER ? -RS_E_ORDER : 0;
}

/*
 * The phases of a scheduled rule from off, its rlen bytes ending with the last: each a whole
 * phase header and ops that fill its length exactly. *limit: the largest rate queue limit.
 */
static int rs_verify_phases(const uint8_t *r, uint32_t rlen, uint32_t off, uint32_t ntraces, uint32_t *limit)
{
	uint32_t j, n = rs_le16(r + 6), plen, end, lim;
	int err;

	if (n < 1 || n > RS_MAX_PHASES)
		return -RS_E_RULES;
	for (j = 0; j < n; j++) {
		const uint8_t *ph = r + off;

		if (rlen - off < RS_PHASE_HDR_LEN)
			return -RS_E_RULES;
		plen = rs_le16(ph + 10);
		if (plen < RS_PHASE_HDR_LEN || plen > rlen - off)
			return -RS_E_RULES;
		if (ph[9] & ~RS_PHF_ALL)
			return -RS_E_FLAGS;
		if (rs_le64(ph) == 0 || rs_le64(ph) > RS_MAX_PHASE_NS || ph[8] > RS_MAX_OPS ||
		    ((ph[9] & RS_PHF_OWN) && ph[8]))
			return -RS_E_OPERAND;
		end = off + RS_PHASE_HDR_LEN;
		err = rs_verify_ops(r, off + plen, &end, 0, ph[8], ntraces, &lim);
		if (err)
			return err;
		if (end != off + plen)
			return -RS_E_RULES;
		if (lim > *limit)
			*limit = lim;
		off = end;
	}
	return off == rlen ? 0 : -RS_E_RULES;
}

/* One rule of rlen bytes (rlen >= 8, inside the program); *limit: its rate queue's capacity. */
static int rs_verify_rule(const uint8_t *r, uint32_t rlen, uint32_t ntraces, uint32_t *limit)
{
	uint32_t off = RS_RULE_HDR_LEN;
	int err;

	if (r[2] > RS_FROM_B)
		return -RS_E_OPERAND;
	if ((r[3] & ~RS_RF_ALL) || (!(r[3] & RS_RF_SCHEDULE) && (rs_le16(r + 6) || (r[3] & (RS_RF_REPEAT | RS_RF_KEEP_TIME)))))
		return -RS_E_FLAGS;
	if (r[4] > RS_MAX_OPS || r[5] > RS_MAX_OPS)
		return -RS_E_RULES;
	err = rs_verify_ops(r, rlen, &off, r[4], r[4] + r[5], ntraces, limit);
	if (err)
		return err;
	if (r[3] & RS_RF_SCHEDULE)
		return rs_verify_phases(r, rlen, off, ntraces, limit);
	return off == rlen ? 0 : -RS_E_RULES;
}

/* ---- the loaded form ------------------------------------------------------
 *
 * rs_state_init() turns the verified program into a classifier, kept in the
 * state after the rate queues, so that finding a frame's first matching rule
 * does not walk every rule: tuple-space search, as Open vSwitch's classifier
 * does. A match op that tests one field for one value under a mask becomes a
 * key field (RS_K_*); rules with the same key fields and masks share a
 * subtable, where a hash of the frame's masked fields finds the rules with
 * its values. Whatever else a rule tests (a range, several values, bytes, a
 * field tested twice) stays residual: the op itself, run on the candidates.
 * First match stays: subtables are visited in the order of their first
 * rule, a bucket holds its rules in program order, and the search stops at
 * the best rule found so far. rs_run_reference() walks the program itself;
 * the fuzzer holds both to the same results (fuzz_engine.c).
 *
 * Frame classes: a frame has no IP, or IPv4 or IPv6 with a TCP header, a UDP
 * header or another upper layer (RS_CLASSES, rs_program.h). A class fixes
 * which fields its frames have and some of their values (the ethertype of an
 * IP class, the protocol of a TCP or UDP class), so each class has its own
 * subtables: only the rules that can match its frames, without the fields
 * it fixes. A frame visits its class's subtables only. Each port has its own
 * (RS_FORM_CLASS): a rule for frames from one port is only in that port's, so
 * the port is never a key field. Frames in RS_RUN_L3 have classes of their own
 * (RS_C_L3), whose subtables leave out the rules that test Ethernet addresses
 * or a tag: the classifier asks no frame whether it has a key field.
 */

/* key fields: the RS_F_* fields of RS_M_RANGE keep their numbers (1..9) */
#define RS_K_PORT	0
#define RS_K_TCP_FLAGS	10
#define RS_K_HAS_VLAN	11
#define RS_K_ETH	12	/* 4 words: source bytes 0-3, 4-5; destination 0-3, 4-5 */
#define RS_K_IP4	16	/* 2 words: source, destination */
#define RS_K_IP6	18	/* 8 words: source 0..3, destination 0..3 */
#define RS_K_N		26
#define RS_K_BIT(k)	(1u << (k))
#define RS_K_ETH_ALL	(0xfu << RS_K_ETH)
#define RS_K_IP4_ALL	(0x3u << RS_K_IP4)
#define RS_K_IP6_ALL	(0xffu << RS_K_IP6)
/* Key fields only some frames have: a tag's fields, the Ethernet addresses (none in RS_RUN_L3,
 * whose classes leave them out: rs_class_keys). rs_class_keys made sure the class has every other
 * field its subtables use. */
#define RS_K_TAG	(RS_K_BIT(RS_F_VLAN) | RS_K_BIT(RS_F_VLAN_PCP))
/* Above a tag field's 16 bits, in its key value (rs_key_value) and its entries' values: an
 * untagged frame's value lacks it and so matches no entry of a subtable keyed on a tag field. A
 * tag key's mask is all ones (rs_shape_op's RS_M_RANGE). */
#define RS_K_PRESENT	0x10000u

/* rs_pkt's mode, how a frame is parsed and written: one word set once a frame (rs_pkt_parse) */
#define RS_PKT_L3	RS_RUN_L3	/* the frame starts at its IP header */
#define RS_PKT_L4	0x2		/* parse the L4 header (RS_FORM_L4: a program may need none) */
#define RS_PKT_REFERENCE 0x4		/* writes take rs_pkt_write's general way (rs_run_reference) */
_Static_assert(!(RS_PKT_L3 & (RS_PKT_L4 | RS_PKT_REFERENCE)), "rs_pkt's mode bits apart");

/* form_flags: the program reads the TCP/UDP/ICMP header, or rewrites (which keeps its checksum);
 * rs_pkt's bit for it, which a frame's mode takes as it is */
#define RS_FORM_L4	RS_PKT_L4

/* frame classes: RS_C_NOIP, or RS_C_IP4/RS_C_IP6 plus RS_C_TCP, RS_C_UDP or RS_C_OTHER */
#define RS_C_NOIP	0
#define RS_C_IP4	1
#define RS_C_IP6	4
#define RS_C_TCP	0
#define RS_C_UDP	1
#define RS_C_OTHER	2
/* added to the class of a frame in RS_RUN_L3 */
#define RS_C_L3		RS_CLASSES
/* the form class (rs_state's class_at) of frames of class c arriving on port RS_PORT_A or RS_PORT_B
 * (RS_PORT_A + 1), the only ports rs_direction_ok lets through */
#define RS_FORM_CLASS(c, port)	(2 * (c) + (port) - RS_PORT_A)
/* the key fields an IP class has; ports need a TCP or UDP class, TCP flags a TCP class */
#define RS_K_PORTS	(RS_K_BIT(RS_F_SRC_PORT) | RS_K_BIT(RS_F_DST_PORT))
#define RS_K_IP_ANY	(RS_K_BIT(RS_F_IP_PROTO) | RS_K_BIT(RS_F_DSCP) | RS_K_BIT(RS_F_TTL) | RS_K_PORTS | \
			 RS_K_BIT(RS_K_TCP_FLAGS) | RS_K_IP4_ALL | RS_K_IP6_ALL)

/* a subtable of up to this many rules is walked; a larger one is hashed */
#define RS_WALK_MAX	4

/* the order a subtable compares its fields in: the likeliest to differ first, so that a walk
 * leaves a rule after one comparison */
static const uint8_t rs_key_order[RS_K_N] = {
	RS_K_PORT, RS_K_TCP_FLAGS, RS_F_DST_PORT, RS_F_SRC_PORT, RS_K_IP4 + 1, RS_K_IP4,
	RS_K_IP6 + 4, RS_K_IP6 + 5, RS_K_IP6 + 6, RS_K_IP6 + 7, RS_K_IP6, RS_K_IP6 + 1, RS_K_IP6 + 2,
	RS_K_IP6 + 3, RS_K_ETH + 2, RS_K_ETH + 3, RS_K_ETH, RS_K_ETH + 1, RS_F_VLAN, RS_F_DSCP,
	RS_F_TTL, RS_F_LENGTH, RS_F_VLAN_PCP, RS_K_HAS_VLAN, RS_F_IP_PROTO, RS_F_ETH_TYPE,
};

/* What a rule tests, split into key fields and residual match ops. */
struct rs_shape {
	uint32_t keys;			/* RS_K_* bits */
	uint32_t resid_keys;		/* RS_K_* bits its residual ops read (rs_op_keys) */
	uint32_t nresid;
	uint32_t act;			/* offset of the first action op in the rule */
	uint32_t mask[RS_K_N], value[RS_K_N];
	uint16_t resid[RS_MAX_OPS];	/* offsets of residual match ops in the rule */
};

struct rs_form_rule {
	uint32_t rule;		/* byte offset of the rule from the state's start (in its copy of the program) */
	uint32_t act;		/* offset of its first action op in the rule */
	uint32_t nops;		/* rs_form_nops: read beside act, where the rule's own two bytes cost more */
	uint32_t resid;		/* pool index of its residual ops' words (RS_RESID_PORTS) */
	uint32_t nresid;
	union {
		uint32_t sub;	/* while building a class: its subtable in the class, RS_NO_SUB none */
		uint32_t state;	/* once built: the byte offset of its struct rs_rule_state in the state */
	};
};

#define RS_NO_SUB	0xffffffffu

/* in a rule's nops (struct rs_form_rule): it has a schedule, whose phase gives the actions */
#define RS_FORM_SCHEDULED	0x100u

/* A rule's action count, with RS_FORM_SCHEDULED when it has a schedule. */
static uint32_t rs_form_nops(const uint8_t *r)
{
	return r[5] | (r[3] & RS_RF_SCHEDULE ? RS_FORM_SCHEDULED : 0);
}

/* A residual op's word: its offset in the program, or with this bit the pool index of a port
 * range op loaded (rs_ports_load): the frames of every class that holds the rule have the port,
 * so it is read without rs_field_get's checks, and the ranges without decoding the op. */
#define RS_RESID_PORTS	0x80000000u

/* A subtable's first RS_HEAD key fields (in rs_key_order) are its head: hashed and compared as
 * that many words, a missing field as RS_K_NONE, 0 under a zero mask. The rest, its tail (more
 * than four fields: rare), are compared one by one. */
#define RS_HEAD		4
#define RS_K_NONE	RS_K_N

/* A rule's entry in its subtable (pool words): its index (with RS_ENTRY_REST), the pool index of
 * the next entry of its bucket (0: none; pool word 0 is never an entry), its head's values, the
 * pool index and number of the rule's residual ops' words (so the classifier reads no rule's
 * form), then its tail's values. */
#define RS_ENTRY_RULE	0
#define RS_ENTRY_NEXT	1
#define RS_ENTRY_KEY	2
#define RS_ENTRY_RESID	(RS_ENTRY_KEY + RS_HEAD)
#define RS_ENTRY_NRESID	(RS_ENTRY_RESID + 1)
#define RS_ENTRY_TAIL	(RS_ENTRY_NRESID + 1)
/* in an entry's rule word: it has a tail or residual ops, which a matching head does not settle
 * (at most 1024 rules: PROGRAM.md) */
#define RS_ENTRY_REST	0x80000000u
/* the first rule of the subtable that ends a class's: above every rule, so the classifier's one
 * test of a subtable's first rule against the best so far also ends the class */
#define RS_SUB_END	0xffffffffu
/* a subtable's kind: one rule, whose first head field is read where it lies (rs_sub_key), and which
 * that field alone settles (a head of one field, no tail, no residual ops); one rule read so, with
 * more to compare; one rule; more. The first two are asked first and in one compare, of a frame
 * that passed the subtable's first word (ne_mask, ne_key): most subtables of small rule sets are
 * (the mix 231.9 -> 228.5 on x86_64, 257.0 -> 255.3 a frame on armhf; bench/engine.py). */
#define RS_SUB_ONE_AT_HEAD	0
#define RS_SUB_ONE_AT	1
#define RS_SUB_ONE	2
#define RS_SUB_MANY	3

struct rs_form_sub {
	uint32_t keys;		/* RS_K_* bits */
	uint32_t first;		/* its first rule; RS_SUB_END in the one after a class's last */
	uint32_t shift;		/* 31 less its hash bits (rs_bucket) */
	uint32_t slots;		/* pool index of its bucket heads (entries, 0: none) */
	uint32_t count;		/* its rules */
	uint32_t ntail;		/* key fields past the head */
	uint32_t tail;		/* pool index of the tail's fields, then their masks */
	uint32_t kind;		/* RS_SUB_*; with one rule, its entry and first word follow */
	uint32_t mask[RS_HEAD];	/* the head's masks */
	uint8_t field[RS_HEAD];	/* the head's fields (RS_K_*, RS_K_NONE) */
	uint8_t at[RS_HEAD];	/* where each is read (rs_sub_key): an rs_pkt at[] index, RS_AT_N none */
	int8_t off[RS_HEAD];	/* and at what offset from there */
	uint32_t nhead;		/* the head's fields that are not RS_K_NONE */
	uint32_t entry;		/* the pool index of that rule's entry */
	/* the word rs_classify compares first at every subtable, before asking its kind, as the frame
	 * holds it (rs_ne32): a one-rule subtable's first head field where it lies, which most frames
	 * leave on; for the other kinds 0 under a zero mask at the frame's start, which every frame
	 * passes on to its kind's way */
	uint32_t ne_mask;
	uint32_t ne_key;
	uint8_t ne_at;
	int8_t ne_off;
};

static void rs_key_set(struct rs_shape *sh, uint32_t k, uint32_t mask, uint32_t value)
{
	sh->keys |= RS_K_BIT(k);
	sh->mask[k] = mask;
	sh->value[k] = value | (RS_K_BIT(k) & RS_K_TAG ? RS_K_PRESENT : 0);
}

/* Makes one match op key fields; 0 when it stays residual. */
static int rs_shape_op(struct rs_shape *sh, uint32_t op, const uint8_t *o)
{
	uint32_t k, m, i;

	switch (op) {
	case RS_M_RANGE:
		if (o[1] != 1 || rs_le16(o + 2) != rs_le16(o + 4) || (sh->keys & RS_K_BIT(o[0])))
			return 0;
		rs_key_set(sh, o[0], 0xffffffffu, rs_le16(o + 2));
		return 1;
	case RS_M_HAS_VLAN:
		if (sh->keys & RS_K_BIT(RS_K_HAS_VLAN))
			return 0;
		rs_key_set(sh, RS_K_HAS_VLAN, 1, 1);
		return 1;
	case RS_M_TCP_FLAGS:
		/* a value with bits outside the mask never matches, here as in the op */
		if (sh->keys & RS_K_BIT(RS_K_TCP_FLAGS))
			return 0;
		rs_key_set(sh, RS_K_TCP_FLAGS, o[0], o[1]);
		return 1;
	case RS_M_ETH:
		k = RS_K_ETH + 2 * o[0];
		if (sh->keys & (0x3u << k))
			return 0;
		m = rs_be32(o + 7);
		rs_key_set(sh, k, m, rs_be32(o + 1) & m);
		m = rs_be16(o + 11);
		if (m)
			rs_key_set(sh, k + 1, m, rs_be16(o + 5) & m);
		return 1;
	case RS_M_IP:
		if (o[1] == RS_FAMILY_IPV4) {
			k = RS_K_IP4 + o[0];
			if (sh->keys & RS_K_BIT(k))
				return 0;
			m = rs_be32(o + 6);
			rs_key_set(sh, k, m, rs_be32(o + 2) & m);
			return 1;
		}
		k = RS_K_IP6 + 4 * o[0];
		if (sh->keys & (0xfu << k))
			return 0;
		/* the first word even under a zero mask: it requires an IPv6 packet */
		for (i = 0; i < 4; i++) {
			m = rs_be32(o + 18 + 4 * i);
			if (i == 0 || m)
				rs_key_set(sh, k + i, m, rs_be32(o + 2 + 4 * i) & m);
		}
		return 1;
	}
	return 0;
}

/* The key fields a match op reads, as RS_K_* bits: a frame without one of them fails the op
 * (rs_field_get, rs_ip_addr_at, RS_M_TCP_FLAGS's test). */
static uint32_t rs_op_keys(uint32_t op, const uint8_t *o)
{
	switch (op) {
	case RS_M_RANGE:
		return RS_K_BIT(o[0]);
	case RS_M_TCP_FLAGS:
		return RS_K_BIT(RS_K_TCP_FLAGS);
	case RS_M_IP:
		return RS_K_BIT(o[1] == RS_FAMILY_IPV4 ? RS_K_IP4 + o[0] : RS_K_IP6 + 4 * o[0]);
	}
	return 0;
}

/* The shape of a verified rule. */
static void rs_rule_shape(const uint8_t *r, struct rs_shape *sh)
{
	uint32_t k, off = RS_RULE_HDR_LEN;

	sh->keys = 0;
	sh->resid_keys = 0;
	sh->nresid = 0;
	if (r[2] != RS_FROM_ANY)
		rs_key_set(sh, RS_K_PORT, 0xffffffffu, r[2] == RS_FROM_A ? RS_PORT_A : RS_PORT_B);
	for (k = 0; k < r[4]; k++) {
		if (!rs_shape_op(sh, r[off], r + off + 2)) {
			sh->resid[sh->nresid++] = (uint16_t)off;
			sh->resid_keys |= rs_op_keys(r[off], r + off + 2);
		}
		off += RS_OP_HDR_LEN + r[off + 1];
	}
	sh->act = off;
}

static uint32_t rs_popcount(uint32_t x)
{
	uint32_t n = 0;

	for (; x; x &= x - 1)
		n++;
	return n;
}

/* The key fields of a rule's shape in form class fc (RS_FORM_CLASS), without those the class
 * fixes; 0 when no frame of the class can match the rule: it is for the other port, or one of the
 * fields it reads, as a key or in a residual op (a port range of several ranges), is not in the
 * class's frames. */
static int rs_class_keys(const struct rs_shape *sh, uint32_t fc, uint32_t *keys)
{
	uint32_t k = sh->keys & ~RS_K_BIT(RS_K_PORT), reads = k | sh->resid_keys, c = fc / 2, kind, i;

	if ((sh->keys & RS_K_BIT(RS_K_PORT)) && sh->value[RS_K_PORT] != (fc & 1 ? RS_PORT_B : RS_PORT_A))
		return 0;
	if (c >= RS_C_L3) {
		/* no Ethernet header, no tag: a key field of either is never there */
		if (k & (RS_K_ETH_ALL | RS_K_TAG))
			return 0;
		c -= RS_C_L3;
	}

	if (c == RS_C_NOIP) {
		*keys = k;
		return !(reads & RS_K_IP_ANY);
	}
	kind = c - (c >= RS_C_IP6 ? RS_C_IP6 : RS_C_IP4);
	if (reads & (c >= RS_C_IP6 ? RS_K_IP4_ALL : RS_K_IP6_ALL))
		return 0;
	if ((kind != RS_C_TCP && (reads & RS_K_BIT(RS_K_TCP_FLAGS))) || (kind == RS_C_OTHER && (reads & RS_K_PORTS)))
		return 0;
	if (k & RS_K_BIT(RS_F_ETH_TYPE)) {
		if (((c >= RS_C_IP6 ? RS_ETH_P_IPV6 : RS_ETH_P_IP) & sh->mask[RS_F_ETH_TYPE]) != sh->value[RS_F_ETH_TYPE])
			return 0;
		k &= ~RS_K_BIT(RS_F_ETH_TYPE);
	}
	if (kind != RS_C_OTHER && (k & RS_K_BIT(RS_F_IP_PROTO))) {
		if (((kind == RS_C_TCP ? RS_IPPROTO_TCP : RS_IPPROTO_UDP) & sh->mask[RS_F_IP_PROTO]) !=
		    sh->value[RS_F_IP_PROTO])
			return 0;
		k &= ~RS_K_BIT(RS_F_IP_PROTO);
	}
	/* an address word under a zero mask only asked for the family, which the class has; other
	 * fields under one still need to be there (an Ethernet address in RS_RUN_L3: never) */
	for (i = RS_K_IP4; i < RS_K_IP6 + 8; i++)
		if ((k & RS_K_BIT(i)) && !sh->mask[i] && !sh->value[i])
			k &= ~RS_K_BIT(i);
	*keys = k;
	return 1;
}

/* Whether a residual op is a port range, which the loaded form holds decoded. */
static int rs_op_is_ports(uint32_t op, const uint8_t *o)
{
	return op == RS_M_RANGE && (o[0] == RS_F_SRC_PORT || o[0] == RS_F_DST_PORT);
}

/* The pool words of a port range op loaded: the port's offset in the TCP/UDP header, the number of
 * ranges, then each range's low end and width. */
static uint32_t rs_ports_words(const uint8_t *o)
{
	return 2 + 2 * o[1];
}

/* Pool words a rule may take, and the subtables it may start: its residual words once, its port
 * range ops loaded (rs_ports_words); in each
 * class it can match, its entry, its subtable's tail fields and masks and up to five bucket heads
 * (a subtable of c rules hashed into fewer than 4c buckets, or walked in 1); and pool word 0 that
 * is no entry. */
static uint32_t rs_form_words(const uint8_t *r, uint32_t *subs)
{
	struct rs_shape sh;
	uint32_t c, keys, j, words = 0;

	rs_rule_shape(r, &sh);
	for (c = 0; c < RS_FORM_CLASSES; c++) {
		if (!rs_class_keys(&sh, c, &keys))
			continue;
		(*subs)++;
		words += RS_ENTRY_TAIL + 3 * rs_popcount(keys) + 5;
	}
	for (j = 0; j < sh.nresid; j++)
		if (rs_op_is_ports(r[sh.resid[j]], r + sh.resid[j] + 2))
			words += rs_ports_words(r + sh.resid[j] + 2);
	return sh.nresid + words + 1;
}

/*
 * A delivery trace of at most left bytes: its header inside them, its length the header and its
 * opportunities exactly, at least one opportunity, the last at the period's end, that within a day.
 */
static int rs_verify_trace(const uint8_t *t, uint32_t left)
{
	uint32_t tlen, n, i, ms = 0;

	if (left < RS_TRACE_HDR_LEN)
		return -RS_E_TRACE;
	tlen = rs_le32(t);
	n = rs_le32(t + 8);
	if (tlen > left || n < 1 || n > (RS_MAX_PROGRAM_LEN - RS_TRACE_HDR_LEN) / 2 ||
	    tlen != RS_TRACE_HDR_LEN + 2 * n)
		return -RS_E_TRACE;
	for (i = 0; i < n; i++)
		ms += rs_le16(t + RS_TRACE_HDR_LEN + 2 * i);
	return ms >= 1 && ms == rs_le32(t + 4) && ms <= RS_MAX_TRACE_MS ? 0 : -RS_E_TRACE;
}

/*
 * Checks the whole program (error order: header, then rule by rule, op by
 * op: op header inside the rule, opcode, operands inside the rule, operand
 * length, operand ranges, timing-op order). On success sets the state size:
 * state header, one rs_rule_state per rule, 8 bytes per rate queue slot,
 * the loaded form, the program's copy; and where the form's pool and the copy
 * start, if pool and copy are not null.
 */
static int rs_verify_program(const uint8_t *prog, uint32_t len, uint32_t *size, uint32_t *pool,
			     uint32_t *copy)
{
	uint32_t n, i, off = RS_HDR_LEN, limit, sum = 0, words = 0, nsubs = 0, ntraces;
	int err;

	if (!prog || len < RS_HDR_LEN)
		return -RS_E_SHORT;
	if (rs_le32(prog) != RS_MAGIC)
		return -RS_E_MAGIC;
	if (rs_le16(prog + 4) != RS_VERSION)
		return -RS_E_VERSION;
	if (len > RS_MAX_PROGRAM_LEN || rs_le32(prog + 12) != len)
		return -RS_E_SHORT;
	if (rs_le16(prog + 6) & ~RS_PF_ALL)
		return -RS_E_FLAGS;
	n = rs_le16(prog + 8);
	if (n > RS_MAX_RULES)
		return -RS_E_RULES;
	ntraces = rs_le16(prog + 10);
	if (ntraces > RS_MAX_TRACES)
		return -RS_E_TRACE;

	for (i = 0; i < n; i++) {
		uint32_t rlen;

		if (len - off < RS_RULE_HDR_LEN)
			return -RS_E_RULES;
		rlen = rs_le16(prog + off);
		if (rlen < RS_RULE_HDR_LEN || rlen > len - off)
			return -RS_E_RULES;
		err = rs_verify_rule(prog + off, rlen, ntraces, &limit);
		if (err)
			return err;
		sum += limit;	/* <= 1024 * 65535: no overflow */
		words += rs_form_words(prog + off, &nsubs);
		off += rlen;
	}
	for (i = 0; i < ntraces; i++) {
		err = rs_verify_trace(prog + off, len - off);
		if (err)
			return err;
		off += rs_le32(prog + off);
	}
	if (off != len)
		return -RS_E_RULES;

	/* then the loaded form, 8-aligned: rules, subtables, the pool of words */
	*size = (uint32_t)sizeof(struct rs_state) +
		n * (uint32_t)sizeof(struct rs_rule_state) + 8 * sum;
	*size = (*size + 7) & ~7u;
	/* and the subtables that end each class that has any, and one the classes without any share */
	nsubs += (nsubs < RS_FORM_CLASSES ? nsubs : RS_FORM_CLASSES) + 1;
	*size += n * (uint32_t)sizeof(struct rs_form_rule) + nsubs * (uint32_t)sizeof(struct rs_form_sub);
	if (pool)
		*pool = *size;
	*size += 4 * words;
	*size = (*size + 7) & ~7u;
	/* and the program's copy, which rs_run reads: a state runs only the program it was built from */
	if (copy)
		*copy = *size;
	*size += (len + 7) & ~7u;
	return 0;
}

int rs_program_verify(const uint8_t *prog, uint32_t len, uint32_t *state_size)
{
	uint32_t size = 0;
	int err = rs_verify_program(prog, len, &size, 0, 0);

	if (!err && state_size)
		*state_size = size;
	return err;
}

const char *rs_verify_strerror(int code)
{
	switch (code) {
	case RS_E_SHORT:	return "program shorter than its header or its declared length";
	case RS_E_MAGIC:	return "not a reshaper program (bad magic)";
	case RS_E_VERSION:	return "unsupported program version";
	case RS_E_FLAGS:	return "unknown flag or non-zero reserved field";
	case RS_E_RULES:	return "rule count or rule length inconsistent";
	case RS_E_OPCODE:	return "unknown opcode, or an op in the wrong section";
	case RS_E_OPLEN:	return "operand length wrong for its opcode";
	case RS_E_OPERAND:	return "operand out of range";
	case RS_E_ORDER:	return "reorder not followed by delay, or a timing action twice in a rule";
	case RS_E_TRACE:	return "a delivery trace malformed, or named and not there";
	default:		return "unknown verifier error";
	}
}

/* ---- PRNG: xoshiro128** seeded through splitmix64 ------------------------
 * The 128-bit xoshiro state is kept as prng[0..3] = s0..s3. Seeding: x = seed;
 * s0 | s1 << 32 = rs_splitmix64(&x); s2 | s3 << 32 = rs_splitmix64(&x)
 * (an all-zero result, which xoshiro cannot leave,
 * becomes s0 = 1). 32-bit arithmetic suits the Cortex-A8.
 */
static uint64_t rs_splitmix64(uint64_t *x)
{
	uint64_t z = (*x += 0x9e3779b97f4a7c15ull);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

static uint32_t rs_rotl32(uint32_t x, int k)
{
	return (x << k) | (x >> (32 - k));
}

static uint32_t rs_prng_u32(struct rs_state *st)
{
	uint32_t s0 = st->prng[0], s1 = st->prng[1], s2 = st->prng[2], s3 = st->prng[3];
	uint32_t r = rs_rotl32(s1 * 5, 7) * 9, t = s1 << 9;

	s2 ^= s0;
	s3 ^= s1;
	s1 ^= s2;
	s0 ^= s3;
	s2 ^= t;
	s3 = rs_rotl32(s3, 11);
	st->prng[0] = s0;
	st->prng[1] = s1;
	st->prng[2] = s2;
	st->prng[3] = s3;
	return r;
}

/* An event of probability p: always draws one number, so runs stay aligned. */
static int rs_prng_event(struct rs_state *st, uint32_t p)
{
	uint32_t r = rs_prng_u32(st);

	return p == RS_PROB_ALWAYS || r < p;
}

/* netem's correlated draw as PROGRAM.md writes it; *last keeps the memory */
static uint32_t rs_prng_corr(struct rs_state *st, uint32_t corr, uint32_t *last)
{
	uint64_t r = rs_prng_u32(st);
	uint32_t u = (uint32_t)r;

	if (corr)	/* without correlation the draw itself */
		u = (uint32_t)((((1ull << 32) - corr) * r + (uint64_t)corr * *last) >> 32);
	*last = u;
	return u;
}

/* ---- state ---- */

static void rs_form_build(struct rs_state *st);

/* The state's copy of its program (rs_state_init). */
static const uint8_t *rs_state_prog(const struct rs_state *st)
{
	return (const uint8_t *)st + st->prog;
}

static struct rs_rule_state *rs_rule_states(struct rs_state *st)
{
	return (struct rs_rule_state *)(st + 1);
}

/* The offset past nops ops of a verified rule r from off. */
static uint32_t rs_ops_end(const uint8_t *r, uint32_t off, uint32_t nops)
{
	uint32_t k;

	for (k = 0; k < nops; k++)
		off += RS_OP_HDR_LEN + r[off + 1];
	return off;
}

/*
 * Every op of a verified rule in turn: its own (matches, then actions), then each phase's
 * action ops. rs_walk_next returns the next op's offset in the rule, 0 after the last; *opens
 * is 1 when a phase's action list begins before it.
 */
struct rs_walk {
	const uint8_t *r;
	uint32_t off, left, phases;
};

static void rs_walk_start(struct rs_walk *w, const uint8_t *r)
{
	w->r = r;
	w->off = RS_RULE_HDR_LEN;
	w->left = r[4] + r[5];
	w->phases = (r[3] & RS_RF_SCHEDULE) ? rs_le16(r + 6) : 0;
}

static uint32_t rs_walk_next(struct rs_walk *w, int *opens)
{
	uint32_t o;

	*opens = 0;
	while (!w->left) {
		if (!w->phases)
			return 0;
		w->phases--;
		w->left = w->r[w->off + 8];
		w->off += RS_PHASE_HDR_LEN;
		*opens = 1;
	}
	o = w->off;
	w->left--;
	w->off += RS_OP_HDR_LEN + w->r[o + 1];
	return o;
}

uint32_t rs_program_push_room(const uint8_t *prog)
{
	uint32_t n = rs_le16(prog + 8), off = RS_HDR_LEN, most = 0, pushes, i, o;
	struct rs_walk w;
	int opens;

	for (i = 0; i < n; i++) {
		rs_walk_start(&w, prog + off);
		pushes = 0;
		while ((o = rs_walk_next(&w, &opens))) {
			if (opens)
				pushes = 0;
			pushes += prog[off + o] == RS_A_PUSH_VLAN;
			if (pushes > most)
				most = pushes;
		}
		off += rs_le16(prog + off);
	}
	return most * RS_VLAN_HLEN;
}

void rs_state_start(void *state, uint64_t load_ns, uint64_t first_ns)
{
	struct rs_state *st = state;
	struct rs_rule_state *rs;
	uint32_t i;

	if (!st)
		return;
	rs = rs_rule_states(st);
	st->epoch_load = load_ns;
	st->epoch_first = first_ns;
	st->epoch_set = 1;
	for (i = 0; i < st->n_rules; i++)
		rs[i].phase_start = rs[i].phase_end = 0;	/* found again from the new time zero */
}

void rs_state_init(const uint8_t *prog, uint32_t prog_len, void *state,
		   uint32_t state_size, uint64_t seed)
{
	struct rs_state *st = state;
	struct rs_rule_state *rs;
	uint8_t *p = state;
	uint32_t i, n, size, pool, copy, again, off, qoff;
	uint64_t x = seed, lo, hi;

	if (!st || state_size < sizeof(*st))
		return;
	for (i = 0; i < state_size; i++)
		p[i] = 0;
	/* a state that does not fit its program stays empty (size 0): rs_run passes */
	if (rs_verify_program(prog, prog_len, &size, &pool, &copy) || size > state_size)
		return;
	/* the state's own copy is what runs, so it is the copy that must be verified: the caller's
	 * bytes may change after this */
	for (i = 0; i < prog_len; i++)
		p[copy + i] = prog[i];
	prog = p + copy;
	if (rs_verify_program(prog, prog_len, &again, 0, 0) || again != size)
		return;

	lo = rs_splitmix64(&x);
	hi = rs_splitmix64(&x);
	if (!lo && !hi)
		lo = 1;
	st->prng[0] = (uint32_t)lo;
	st->prng[1] = (uint32_t)(lo >> 32);
	st->prng[2] = (uint32_t)hi;
	st->prng[3] = (uint32_t)(hi >> 32);
	n = rs_le16(prog + 8);
	st->n_rules = n;
	st->size = size;
	st->prog_flags = rs_le16(prog + 6);

	rs = rs_rule_states(st);
	qoff = (uint32_t)sizeof(*st) + n * (uint32_t)sizeof(*rs);
	off = RS_HDR_LEN;
	for (i = 0; i < n; i++) {
		const uint8_t *r = prog + off;
		uint32_t limit, j, o;

		rs_verify_rule(r, rs_le16(r), rs_le16(prog + 10), &limit);	/* verified above: the queue's capacity */
		if (limit) {
			rs[i].rate_limit = limit;
			rs[i].rate_queue = qoff;
			qoff += 8 * limit;
		}
		if (r[3] & RS_RF_SCHEDULE) {
			o = rs_ops_end(r, RS_RULE_HDR_LEN, r[4] + r[5]);
			rs[i].phases = o;
			for (j = 0; j < rs_le16(r + 6); j++, o += rs_le16(r + o + 10))
				rs[i].cycle_ns += rs_le64(r + o);
		}
		off += rs_le16(r);
	}
	st->traces = off;
	st->prog = copy;
	st->form = (qoff + 7) & ~7u;
	st->subs = st->form + n * (uint32_t)sizeof(struct rs_form_rule);
	st->pool = pool;
	rs_form_build(st);
}

/* ---- frame parsing ---- */

/* rs_pkt's at[]: the frame's start, the IP header, the L4 header; RS_AT_N: a key field read by
 * rs_key_value */
#define RS_AT_FRAME	0
#define RS_AT_L3	1
#define RS_AT_L4	2
#define RS_AT_N		3

/* cap last: rs_pkt_parse's stores of len, cap and the mode's fields side by side became SSE
 * shuffles on x86_64 (GCC's SLP vectorizer), 4 instructions more a frame */
struct rs_pkt {
	uint8_t *b;
	uint32_t len;
	uint32_t mode;		/* RS_PKT_*: one store a frame, where three fields took three (x86_64
				 * mix -2.4, no rules -2; armhf no rules -4; bench/engine.py) */
	uint32_t ntags;		/* inner tags parsed; the first at offset 12 */
	uint32_t eth_type;
	uint32_t ipv;		/* 0 (no IP), 4 or 6 */
	/* where the classifier reads a key field's word (RS_AT_*, rs_sub_key): the frame's start (0),
	 * the IP header, the end of the IP headers = L4 header (l4 valid with has_l4off). Just after
	 * ipv, which the common parser stores with them. */
	union {
		uint32_t at[RS_AT_N];
		struct {
			uint32_t at_frame, l3, l4;
		};
	};
	uint32_t l3_end;	/* end of the IP packet (no padding) */
	uint32_t proto;		/* upper-layer protocol */
	uint32_t frag;		/* not 0: a fragment, first or not */
	uint32_t has_l4off;	/* l4 is valid (first fragment, headers walked) */
	uint32_t l4hl;		/* TCP/UDP/ICMP header length, 0: none parsed */
	uint32_t ck;		/* L4 checksum offset, 0: none */
	uint32_t cap;
};

static int rs_is_vlan_tpid(uint32_t t)
{
	return t == RS_ETH_P_8021Q || t == RS_ETH_P_8021AD;
}

/* TCP, UDP, ICMP/ICMPv6 header at p->l4; a bogus one is just absent. Returns the kind of a frame
 * class (RS_C_TCP, RS_C_UDP, RS_C_OTHER) that the header parsed gives. Inlined: as a call it cost
 * the five-rule mix 9 instructions a frame (bench/engine.py). */
static inline __attribute__((__always_inline__)) uint32_t rs_parse_l4(struct rs_pkt *p)
{
	uint32_t room = p->l3_end - p->l4, hl = 0, ck = 0, kind = RS_C_OTHER;

	if (p->proto == RS_IPPROTO_TCP && room >= 20) {
		hl = (uint32_t)(p->b[p->l4 + 12] >> 2) & 0x3c;	/* data offset, in words, times 4 */
		ck = 16;
		kind = RS_C_TCP;
		if (hl - 20 > room - 20)	/* hl < 20 or > room in one test: room >= 20 here */
			hl = 0;
	} else if (p->proto == RS_IPPROTO_UDP && room >= 8) {
		hl = 8;
		ck = 6;
		kind = RS_C_UDP;
	} else if (((p->proto == RS_IPPROTO_ICMP && p->ipv == 4) ||
		    (p->proto == RS_IPPROTO_ICMPV6 && p->ipv == 6)) && room >= 4) {
		hl = 4;
		ck = 2;
	}
	if (!hl)
		return RS_C_OTHER;
	p->l4hl = hl;
	p->ck = p->l4 + ck;
	return kind;
}

static inline __attribute__((__always_inline__)) int rs_parse_ipv4(struct rs_pkt *p)
{
	const uint8_t *h = p->b + p->l3;
	uint32_t room = p->len - p->l3, hl, tot, frag;

	if (room < 20 || (h[0] >> 4) != 4)
		return -1;
	hl = (uint32_t)(h[0] & 0xf) * 4;
	tot = rs_be16(h + 2);
	if (hl < 20 || hl > room || tot < hl || tot > room)
		return -1;
	p->ipv = 4;
	p->l3_end = p->l3 + tot;
	p->proto = h[9];
	frag = rs_be16(h + 6);
	p->frag = (frag & 0x3fff) != 0;	/* MF or an offset */
	p->l4 = p->l3 + hl;
	p->has_l4off = (frag & 0x1fff) == 0;
	return 0;
}

static int rs_is_ext_hdr(uint32_t nh)
{
	return nh == 0 || nh == 43 || nh == 60 || nh == 44 || nh == 51;
}

static int rs_parse_ipv6(struct rs_pkt *p)
{
	const uint8_t *h = p->b + p->l3;
	uint32_t room = p->len - p->l3, off, nh, i, first = 1;

	if (room < 40 || (h[0] >> 4) != 6 || 40 + rs_be16(h + 4) > room)
		return -1;
	p->ipv = 6;
	p->l3_end = p->l3 + 40 + rs_be16(h + 4);
	nh = h[6];
	off = p->l3 + 40;
	for (i = 0; i < RS_MAX_EXTHDRS && rs_is_ext_hdr(nh); i++) {
		uint32_t hl;

		if (p->l3_end - off < 8)
			return -1;
		if (nh == 44) {
			hl = 8;
			p->frag = 1;
			if (rs_be16(p->b + off + 2) & 0xfff8)
				first = 0;
		} else if (nh == 51) {
			hl = ((uint32_t)p->b[off + 1] + 2) * 4;
		} else {
			hl = ((uint32_t)p->b[off + 1] + 1) * 8;
		}
		if (hl > p->l3_end - off)
			return -1;
		nh = p->b[off];
		off += hl;
	}
	p->proto = nh;
	p->l4 = off;
	/* more than 8 extension headers: the upper layer is not reached */
	p->has_l4off = first && !rs_is_ext_hdr(nh);
	return 0;
}

/* Fills p from p->b/len; returns -1 for a malformed frame. */
static int rs_parse(struct rs_pkt *p)
{
	uint32_t off = 12, i;
	int err;

	p->ntags = p->eth_type = 0;
	p->ipv = p->proto = p->frag = 0;
	p->has_l4off = p->l4 = p->l4hl = p->ck = 0;
	p->l3 = p->l3_end = 0;
	p->at_frame = 0;

	if (p->mode & RS_PKT_L3) {
		if (p->len < 1)
			return -1;
		if ((p->b[0] >> 4) == 4)
			p->eth_type = RS_ETH_P_IP;
		else if ((p->b[0] >> 4) == 6)
			p->eth_type = RS_ETH_P_IPV6;
		else
			return -1;
	} else {
		if (p->len < RS_ETH_HLEN)
			return -1;
		p->eth_type = rs_be16(p->b + off);
		for (i = 0; i < RS_MAX_TAGS && rs_is_vlan_tpid(p->eth_type); i++) {
			if (p->len - off < 8)	/* tag + next ethertype */
				return -1;
			off += 4;
			p->ntags++;
			p->eth_type = rs_be16(p->b + off);
		}
		p->l3 = off + 2;
	}

	if (p->eth_type == RS_ETH_P_IP)
		err = rs_parse_ipv4(p);
	else if (p->eth_type == RS_ETH_P_IPV6)
		err = rs_parse_ipv6(p);
	else
		return 0;
	if (err)
		return err;
	if (p->has_l4off && (p->mode & RS_PKT_L4))
		rs_parse_l4(p);
	return 0;
}

/*
 * Re-parse after a length change. A frame an action made unparsable keeps
 * going with no IP fields (it is not re-classified as malformed).
 */
static void rs_reparse(struct rs_pkt *p)
{
	if (rs_parse(p)) {
		/* tags and ethertype parsed before the failure stay valid */
		p->ipv = p->proto = p->frag = p->has_l4off = 0;
		p->l4hl = p->ck = 0;
	}
}

/* The kind of class an IP frame of this protocol has when its header is not parsed. */
static uint32_t rs_proto_kind(uint32_t proto)
{
	return proto == RS_IPPROTO_TCP ? RS_C_TCP : proto == RS_IPPROTO_UDP ? RS_C_UDP : RS_C_OTHER;
}

/* The class (RS_C_*) of a frame rs_parse parsed. Without RS_PKT_L4 (RS_FORM_L4) no TCP or UDP
 * header is parsed and no rule needs one: the protocol alone makes the class. */
static uint32_t rs_frame_class(const struct rs_pkt *p)
{
	uint32_t c;

	if (!p->ipv)
		return RS_C_NOIP;
	c = p->ipv == 4 ? RS_C_IP4 : RS_C_IP6;
	if (!p->l4hl && (p->mode & RS_PKT_L4))
		return c + RS_C_OTHER;
	return c + rs_proto_kind(p->proto);
}

/* rs_parse, then the frame's class (RS_C_*, plus RS_C_L3 in RS_RUN_L3); -1 for a malformed one */
static int rs_parse_class(struct rs_pkt *p)
{
	if (rs_parse(p))
		return -1;
	return (int)(rs_frame_class(p) + ((p->mode & RS_PKT_L3) ? RS_C_L3 : 0));
}

/* rs_parse_common's fields of an untagged IP frame of tot bytes after its Ethernet header, before
 * the L4 header's */
static inline __attribute__((__always_inline__)) void rs_parse_common_end(struct rs_pkt *p, uint32_t eth_type,
									   uint32_t tot)
{
	p->ntags = 0;
	p->eth_type = eth_type;
	p->l3_end = RS_ETH_HLEN + tot;
	p->l4hl = p->ck = 0;
}

/*
 * rs_parse_class for the frames most links carry, untagged Ethernet with IPv4 without options or
 * IPv6 without extension headers, in fewer steps: one test of the version and header length,
 * constant offsets, the class found on the way. It sets the same fields to the same values and
 * returns the same class; any other frame goes to rs_parse_class. rs_run parses here and
 * rs_run_reference in rs_parse, so the differential fuzzer (rules/engine/fuzz_engine.c) compares
 * the two.
 */
static __attribute__((__noinline__)) int rs_parse_common(struct rs_pkt *p)
{
	const uint8_t *h = p->b + RS_ETH_HLEN;
	uint32_t eth_type, room = p->len - RS_ETH_HLEN, tot, frag, c;

	/* two tests, not one of two conditions: GCC made that a branchless sum on 32-bit ARM, 7
	 * instructions more (bench/engine.py, armhf) */
	if (p->mode & RS_PKT_L3)
		return rs_parse_class(p);
	if (p->len < RS_ETH_HLEN + 20)
		return rs_parse_class(p);
	/* the ethertype and the fragment bits tested as the frame has them (rs_ne16_of) */
	eth_type = rs_ne16(p->b + 12);
	if (eth_type == rs_ne16_of(RS_ETH_P_IP) && h[0] == 0x45) {
		tot = rs_be16(h + 2);
		if (tot - 20 > room - 20)	/* tot < 20 or > room in one test: room >= 20 here */
			return -1;
		frag = rs_ne16(h + 6) & rs_ne16_of(0x3fff);
		eth_type = RS_ETH_P_IP;
		c = RS_C_IP4;
		p->proto = h[9];
		p->frag = frag;		/* MF or an offset: not 0 */
		p->has_l4off = (frag & rs_ne16_of(0x1fff)) == 0;
		/* constants side by side in struct rs_pkt and here: two stores of the four on armhf (the
		 * parsers set at_frame, not rs_pkt_parse before them: armhf 2 fewer a frame) */
		p->ipv = 4;
		p->at_frame = 0;
		p->l3 = RS_ETH_HLEN;
		p->l4 = RS_ETH_HLEN + 20;
		/* its own way to the end when the L4 header is wanted: GCC then reads the header at
		 * constant offsets, where the shared way set registers up for both versions (bench/
		 * engine.py: x86_64 mix 3.3 less, armhf 2; the same for IPv6: x86_64 4 more). Apart from
		 * the stores above: in one block GCC packed them into SSE shuffles (1.4 more) */
		if (p->mode & RS_PKT_L4) {
			rs_parse_common_end(p, eth_type, tot);
			return (int)(c + (p->has_l4off ? rs_parse_l4(p) : RS_C_OTHER));
		}
	} else if (eth_type == rs_ne16_of(RS_ETH_P_IPV6) && room >= 40 && (h[0] >> 4) == 6 &&
		   !rs_is_ext_hdr(h[6])) {
		eth_type = RS_ETH_P_IPV6;
		tot = 40 + rs_be16(h + 4);
		if (tot > room)
			return -1;
		c = RS_C_IP6;
		p->proto = h[6];
		p->frag = 0;
		p->has_l4off = 1;
		p->ipv = 6;
		p->at_frame = 0;
		p->l3 = RS_ETH_HLEN;
		p->l4 = RS_ETH_HLEN + 40;
	} else {
		return rs_parse_class(p);
	}
	rs_parse_common_end(p, eth_type, tot);
	if (!(p->mode & RS_PKT_L4))
		return (int)(c + rs_proto_kind(p->proto));
	return (int)(c + (p->has_l4off ? rs_parse_l4(p) : RS_C_OTHER));
}

/* Parses frame[0, len) of a buffer of cap bytes into p, in the mode run_flags' RS_RUN_L3 and the
 * RS_PKT_* bits wanted make; returns its class (RS_C_*; 0 for the reference), or -1 for a frame the
 * rules do not see (none, too long, malformed). Every entry starts its frame here, so no field is
 * left from another frame. */
static int rs_pkt_parse(struct rs_pkt *p, uint8_t *frame, uint32_t len, uint32_t cap,
			uint32_t run_flags, uint32_t wants)
{
	p->b = frame;
	p->len = len;
	p->cap = cap;
	p->mode = (run_flags & RS_RUN_L3) | wants;
	/* expected not taken: x86_64 then jumps on the rare way, 1 instruction less a frame */
	if (__builtin_expect(!frame || len > cap || len > RS_MAX_FRAME, 0))
		return -1;
	if (wants & RS_PKT_REFERENCE)	/* the walk asks no class */
		return rs_parse(p) ? -1 : 0;
	return rs_parse_common(p);
}

/* ---- field access ---- */

/* Gets a field of RS_F_*; returns -1 when the frame does not have it. Inlined into rs_match_op:
 * as a call it cost a residual port range 8 instructions, the walk 3 a rule. */
static inline __attribute__((__always_inline__)) int rs_field_get(const struct rs_pkt *p, uint32_t f,
								  uint32_t rx_len, uint32_t *val)
{
	const uint8_t *h = p->b + p->l3;

	switch (f) {
	case RS_F_ETH_TYPE:
		*val = p->eth_type;
		return 0;
	case RS_F_VLAN:
	case RS_F_VLAN_PCP:
		if (!p->ntags)
			return -1;
		*val = rs_be16(p->b + 14);
		*val = f == RS_F_VLAN ? *val & 0xfff : *val >> 13;
		return 0;
	case RS_F_IP_PROTO:
		*val = p->proto;
		return p->ipv ? 0 : -1;
	case RS_F_SRC_PORT:
	case RS_F_DST_PORT:
		if (!p->l4hl || (p->proto != RS_IPPROTO_TCP &&
				 p->proto != RS_IPPROTO_UDP))
			return -1;
		*val = rs_be16(p->b + p->l4 + (f == RS_F_DST_PORT ? 2 : 0));
		return 0;
	case RS_F_DSCP:
		if (p->ipv == 4)
			*val = h[1] >> 2;
		else if (p->ipv == 6)
			*val = (uint32_t)(h[0] & 0xf) << 2 | h[1] >> 6;
		else
			return -1;
		return 0;
	case RS_F_TTL:
		if (!p->ipv)
			return -1;
		*val = p->ipv == 4 ? h[8] : h[7];
		return 0;
	case RS_F_LENGTH:
		*val = rx_len;
		return 0;
	}
	return -1;
}

/* Where base+offset..+n lies in the frame; -1 if those bytes do not exist.
 * L3 and L4 bases reach only to the end of the IP packet (never padding). */
static int rs_bytes_at(const struct rs_pkt *p, const uint8_t *o, uint32_t *at)
{
	uint32_t start, end, n = o[3], off = rs_le16(o + 1);

	if (o[0] == RS_BASE_L2) {
		start = 0;
		end = p->len;
	} else if (o[0] == RS_BASE_L3 && p->ipv) {
		start = p->l3;
		end = p->l3_end;
	} else if (o[0] == RS_BASE_L4 && p->ipv && p->has_l4off) {
		start = p->l4;
		end = p->l3_end;
	} else {
		return -1;
	}
	if (off > end - start || n > end - start - off)
		return -1;
	*at = start + off;
	return 0;
}

/* The offset of an IP header's source or destination address (RS_SRC, RS_DST) in its header */
static uint32_t rs_ip_addr_off(uint32_t which, uint32_t family)
{
	if (family == RS_FAMILY_IPV4)
		return which == RS_DST ? 16 : 12;
	return which == RS_DST ? 24 : 8;
}

/* Offset of an IP address of the packet's own family, or -1. */
static int rs_ip_addr_at(const struct rs_pkt *p, uint32_t which, uint32_t family,
		      uint32_t *at, uint32_t *n)
{
	if (!p->ipv || p->ipv != family)
		return -1;
	*at = p->l3 + rs_ip_addr_off(which, family);
	*n = family == RS_FAMILY_IPV4 ? 4 : 16;
	return 0;
}

/* ---- matching ---- */

static int rs_masked_eq(const uint8_t *a, const uint8_t *v, const uint8_t *m,
		     uint32_t n)
{
	uint32_t i;

	for (i = 0; i < n; i++)
		if ((a[i] & m[i]) != (v[i] & m[i]))
			return 0;
	return 1;
}

static inline __attribute__((__always_inline__)) int rs_match_op(const struct rs_pkt *p, uint32_t op, const uint8_t *o,
		    uint32_t rx_len)
{
	uint32_t at, n, val, i;

	switch (op) {
	case RS_M_ETH:
		if (p->mode & RS_PKT_L3)
			return 0;
		return rs_masked_eq(p->b + (o[0] == RS_DST ? 0 : 6), o + 1, o + 7, 6);
	case RS_M_RANGE:
		if (rs_field_get(p, o[0], rx_len, &val))
			return 0;
		for (i = 0; i < o[1]; i++)
			if (val >= rs_le16(o + 2 + 4 * i) && val <= rs_le16(o + 4 + 4 * i))
				return 1;
		return 0;
	case RS_M_HAS_VLAN:
		return p->ntags > 0;
	case RS_M_IP:
		if (rs_ip_addr_at(p, o[0], o[1], &at, &n))
			return 0;
		return rs_masked_eq(p->b + at, o + 2, o + 2 + n, n);
	case RS_M_TCP_FLAGS:
		if (!p->l4hl || p->proto != RS_IPPROTO_TCP)
			return 0;
		return (p->b[p->l4 + 13] & o[0]) == o[1];
	case RS_M_BYTES:
		if (rs_bytes_at(p, o, &at))
			return 0;
		return rs_masked_eq(p->b + at, o + 4, o + 4 + o[3], o[3]);
	}
	return 0;
}

/* Returns the offset of the rule's first action op if all matches hold (inlined into the walk, as it was when it had one caller). */
static inline __attribute__((__always_inline__)) int rs_rule_matches(const struct rs_pkt *p, const uint8_t *r,
			uint32_t port, uint32_t rx_len, uint32_t *act)
{
	uint32_t k, off = RS_RULE_HDR_LEN;

	if ((r[2] == RS_FROM_A && port != RS_PORT_A) ||
	    (r[2] == RS_FROM_B && port != RS_PORT_B))
		return 0;
	for (k = 0; k < r[4]; k++) {
		if (!rs_match_op(p, r[off], r + off + 2, rx_len))
			return 0;
		off += RS_OP_HDR_LEN + r[off + 1];
	}
	*act = off;
	return 1;
}

/* Why a rule rs_rule_matches refused did not match, into its trace event: its from, or the first
 * match op that failed and the field value that op read. */
static void rs_rule_miss(const struct rs_pkt *p, const uint8_t *r, uint32_t port, uint32_t rx_len,
			 struct rs_trace_event *e)
{
	uint32_t k, off = RS_RULE_HDR_LEN;

	e->b = RS_T_FROM;
	if ((r[2] == RS_FROM_A && port != RS_PORT_A) || (r[2] == RS_FROM_B && port != RS_PORT_B))
		return;
	for (k = 0; k < r[4]; k++, off += RS_OP_HDR_LEN + r[off + 1]) {
		if (!rs_match_op(p, r[off], r + off + 2, rx_len)) {
			e->b = k;
			e->c = r[off] == RS_M_RANGE && !rs_field_get(p, r[off + 2], rx_len, &e->d);
			return;
		}
	}
}

/* ---- classifying through the loaded form ---- */

static struct rs_form_rule *rs_form_rules(const struct rs_state *st)
{
	return (struct rs_form_rule *)(void *)((uint8_t *)st + st->form);
}

static struct rs_form_sub *rs_form_subs(const struct rs_state *st)
{
	return (struct rs_form_sub *)(void *)((uint8_t *)st + st->subs);
}

/* The pool's words are indexed from the state's start (rs_form_build's first index is past
 * st->pool): the classifier then needs no pool address, the state's being it (bench/engine.py: the
 * mix 6.4 less on x86_64, 2.1 on armhf). */
static uint32_t *rs_form_pool(const struct rs_state *st)
{
	return (uint32_t *)(void *)st;
}

/* The first word's multiplier of rs_head_hash, alone the hash of a head of one field */
#define RS_HASH_MUL0 0x9e3779b1u

/* Multilinear hashing of a head, one odd multiplier per word: the top bits of the sum choose the
 * bucket. A head of one field (unused words are 0) is then Fibonacci hashing, which spreads
 * consecutive addresses evenly. Not inlined: in rs_classify's loop the compiler loaded the four
 * multipliers for every frame that visits a subtable, hashed or not (12 instructions on armhf). */
static __attribute__((__noinline__)) uint32_t rs_head_hash(uint32_t w0, uint32_t w1, uint32_t w2, uint32_t w3)
{
	return w0 * RS_HASH_MUL0 + w1 * 0x85ebca77u + w2 * 0xc2b2ae3du + w3 * 0x27d4eb2fu;
}

/* The bucket of hash h: its top bits, none for one bucket. Two shifts, as a shift by 32 would be
 * undefined: without the test for no bits, 3 instructions less a hashed subtable (bench/engine.py). */
static uint32_t rs_bucket(const struct rs_form_sub *sub, uint32_t h)
{
	return h >> sub->shift >> 1;
}

/* Whether an op reads what rs_parse_l4 finds: ports, TCP flags, the L4 checksum (every rewrite
 * keeps it), the end of the headers (truncate). Timing, loss, drop and corrupt read none. */
static int rs_op_wants_l4(uint32_t op, const uint8_t *o)
{
	switch (op) {
	case RS_M_RANGE:
		return o[0] == RS_F_SRC_PORT || o[0] == RS_F_DST_PORT;
	case RS_M_TCP_FLAGS:
		return 1;
	case RS_M_ETH:
	case RS_M_HAS_VLAN:
	case RS_M_IP:
	case RS_M_BYTES:
	case RS_A_DROP:
	case RS_A_DUPLICATE:
	case RS_A_CORRUPT:
	case RS_A_LOSS:
	case RS_A_LOSS_GE:
	case RS_A_DELAY:
	case RS_A_REORDER:
	case RS_A_RATE:
	case RS_A_RATE_TRACE:
		return 0;
	}
	return 1;
}

/* A rule's key fields in a subtable's order (rs_key_order); returns how many. */
static uint32_t rs_key_list(uint32_t keys, uint32_t *order)
{
	uint32_t k, n = 0;

	for (k = 0; k < RS_K_N; k++)
		if (keys & RS_K_BIT(rs_key_order[k]))
			order[n++] = rs_key_order[k];
	return n;
}

/*
 * Where the classifier reads key field k of the frames of form class c: an index of rs_pkt's at[]
 * and *off from there, the big-endian word whose low bits are the field; RS_AT_N for a field
 * rs_key_value works out (the ethertype, a tag's fields, DSCP, the length; IPv6's protocol, which
 * extension headers move). Each word lies inside every frame of the class: a TCP or UDP header is
 * whole, an IP header at least 20 or 40 bytes, an Ethernet header there outside RS_RUN_L3, which
 * has no class with an Ethernet key (rs_class_keys). RS_K_NONE, under a zero mask, reads the
 * frame's first word.
 */
static uint32_t rs_key_at(uint32_t k, uint32_t fc, int8_t *off)
{
	uint32_t v4 = fc / 2 % RS_C_L3 < RS_C_IP6;

	switch (k) {
	case RS_F_SRC_PORT:	*off = -2; return RS_AT_L4;
	case RS_F_DST_PORT:	*off = 0; return RS_AT_L4;
	case RS_K_TCP_FLAGS:	*off = 10; return RS_AT_L4;
	case RS_F_TTL:		*off = v4 ? 5 : 4; return RS_AT_L3;
	case RS_F_IP_PROTO:	*off = 6; return v4 ? RS_AT_L3 : RS_AT_N;
	case RS_K_IP4:
	case RS_K_IP4 + 1:
		*off = (int8_t)rs_ip_addr_off(k - RS_K_IP4, RS_FAMILY_IPV4);
		return RS_AT_L3;
	case RS_K_ETH:		*off = 6; return RS_AT_FRAME;
	case RS_K_ETH + 1:	*off = 8; return RS_AT_FRAME;
	case RS_K_ETH + 2:
	case RS_K_NONE:		*off = 0; return RS_AT_FRAME;
	case RS_K_ETH + 3:	*off = 2; return RS_AT_FRAME;
	}
	if (k >= RS_K_IP6 && k < RS_K_IP6 + 8) {	/* word k % 4 of address k / 4 */
		*off = (int8_t)(rs_ip_addr_off((k - RS_K_IP6) / 4, RS_FAMILY_IPV6) + 4 * ((k - RS_K_IP6) % 4));
		return RS_AT_L3;
	}
	*off = 0;
	return RS_AT_N;
}

/* A head field's mask, narrowed to the field's width: the word rs_key_at reads has more above it.
 * Every key value lies inside its width. */
static uint32_t rs_head_mask(const struct rs_shape *sh, uint32_t k)
{
	switch (k) {
	case RS_F_SRC_PORT:
	case RS_F_DST_PORT:
	case RS_K_ETH + 1:
	case RS_K_ETH + 3:
		return sh->mask[k] & 0xffff;
	case RS_K_TCP_FLAGS:
	case RS_F_IP_PROTO:
		return sh->mask[k] & 0xff;
	case RS_F_TTL:
		return sh->mask[k] & RS_MAX_TTL;
	}
	return sh->mask[k];
}

/* The subtable among fs[first, last) with these key fields and masks, or last. */
static uint32_t rs_find_sub(const struct rs_form_sub *fs, const uint32_t *pool, uint32_t first,
			    uint32_t last, uint32_t keys, const uint32_t *order, uint32_t nk,
			    const struct rs_shape *sh)
{
	uint32_t s, j;

	for (s = first; s < last; s++) {
		if (fs[s].keys != keys)
			continue;
		for (j = 0; j < nk && (j < RS_HEAD ? rs_head_mask(sh, order[j]) == fs[s].mask[j] :
				       sh->mask[order[j]] == pool[fs[s].tail + fs[s].ntail + j - RS_HEAD]); j++)
			;
		if (j == nk)
			return s;
	}
	return last;
}

/* Builds the subtables of form class c from subtable first on (after those of the classes before
 * it): which rules can match its frames (rs_class_keys), their subtables in the order of their
 * first rule, then each rule's entry at the tail of its bucket, in program order. Returns the
 * subtable after its last; *used_words counts the pool words used. */
static uint32_t rs_form_class(struct rs_state *st, uint32_t c, uint32_t first,
			      uint32_t *used_words)
{
	struct rs_form_rule *fr = rs_form_rules(st);
	struct rs_form_sub *fs = rs_form_subs(st);
	uint32_t *pool = rs_form_pool(st), used = *used_words, last = first, i, j, s, nk, keys;
	uint32_t order[RS_K_N];
	struct rs_shape sh;

	for (i = 0; i < st->n_rules; i++) {
		fr[i].sub = RS_NO_SUB;
		rs_rule_shape((const uint8_t *)st + fr[i].rule, &sh);
		if (!rs_class_keys(&sh, c, &keys))
			continue;
		nk = rs_key_list(keys, order);
		s = rs_find_sub(fs, pool, first, last, keys, order, nk, &sh);
		if (s == last) {
			last++;
			fs[s].keys = keys;
			fs[s].first = i;
			for (j = 0; j < RS_HEAD; j++) {
				fs[s].field[j] = (uint8_t)(j < nk ? order[j] : RS_K_NONE);
				fs[s].mask[j] = j < nk ? rs_head_mask(&sh, order[j]) : 0;
				fs[s].at[j] = (uint8_t)rs_key_at(fs[s].field[j], c, &fs[s].off[j]);
			}
			fs[s].nhead = nk < RS_HEAD ? nk : RS_HEAD;
			fs[s].ntail = nk > RS_HEAD ? nk - RS_HEAD : 0;
			fs[s].tail = used;
			for (j = RS_HEAD; j < nk; j++)
				pool[used++] = order[j];
			for (j = RS_HEAD; j < nk; j++)
				pool[used++] = sh.mask[order[j]];
		}
		fs[s].count++;
		fr[i].sub = s;
	}
	for (s = first; s < last; s++) {
		uint32_t bits = 0;

		while (fs[s].count > RS_WALK_MAX && (1u << bits) < 2 * fs[s].count)
			bits++;
		fs[s].shift = 31 - bits;
		fs[s].slots = used;
		used += 1u << bits;
		fs[s].kind = fs[s].count > 1 ? RS_SUB_MANY : fs[s].at[0] < RS_AT_N ? RS_SUB_ONE_AT : RS_SUB_ONE;
	}
	/* rules join the tail of their bucket: each bucket lists its rules in program order */
	for (i = 0; i < st->n_rules; i++) {
		struct rs_form_sub *sub;
		uint32_t *entry = pool + used, *e;

		if (fr[i].sub == RS_NO_SUB)
			continue;
		sub = fs + fr[i].sub;
		rs_rule_shape((const uint8_t *)st + fr[i].rule, &sh);
		entry[RS_ENTRY_RULE] = i | (sub->ntail || fr[i].nresid ? RS_ENTRY_REST : 0);
		for (j = 0; j < RS_HEAD; j++)
			entry[RS_ENTRY_KEY + j] = sub->field[j] == RS_K_NONE ? 0 : sh.value[sub->field[j]];
		entry[RS_ENTRY_RESID] = fr[i].resid;
		entry[RS_ENTRY_NRESID] = fr[i].nresid;
		for (j = 0; j < sub->ntail; j++)
			entry[RS_ENTRY_TAIL + j] = sh.value[pool[sub->tail + j]];
		if (sub->count == 1)
			sub->entry = used;
		e = pool + sub->slots + rs_bucket(sub, rs_head_hash(entry[RS_ENTRY_KEY], entry[RS_ENTRY_KEY + 1],
								     entry[RS_ENTRY_KEY + 2], entry[RS_ENTRY_KEY + 3]));
		while (*e)
			e = pool + *e + RS_ENTRY_NEXT;
		*e = used;
		used += RS_ENTRY_TAIL + sub->ntail;
	}
	for (s = first; s < last; s++) {
		fs[s].ne_at = RS_AT_FRAME;	/* with offset, mask and key 0: every frame passes */
		fs[s].ne_off = 0;
		fs[s].ne_mask = fs[s].ne_key = 0;
		if (fs[s].kind != RS_SUB_ONE_AT)
			continue;
		fs[s].ne_at = fs[s].at[0];
		fs[s].ne_off = fs[s].off[0];
		fs[s].ne_mask = rs_ne32_of(fs[s].mask[0]);
		fs[s].ne_key = rs_ne32_of(pool[fs[s].entry + RS_ENTRY_KEY]);
		if (fs[s].nhead == 1 && !(pool[fs[s].entry + RS_ENTRY_RULE] & RS_ENTRY_REST))
			fs[s].kind = RS_SUB_ONE_AT_HEAD;
	}
	*used_words = used;
	return last;
}

/* A verified port range op into the pool at used (rs_ports_words); returns the words now used. */
static uint32_t rs_ports_load(uint32_t *pool, uint32_t used, const uint8_t *o)
{
	uint32_t j;

	pool[used++] = o[0] == RS_F_DST_PORT ? 2 : 0;
	pool[used++] = o[1];
	for (j = 0; j < o[1]; j++) {
		pool[used++] = rs_le16(o + 2 + 4 * j);
		pool[used++] = rs_le16(o + 4 + 4 * j) - rs_le16(o + 2 + 4 * j);	/* low <= high: verified */
	}
	return used;
}

/* Builds the classifier of the state's verified copy of its program into it, zeroed (rs_state_init). */
static void rs_form_build(struct rs_state *st)
{
	const uint8_t *prog = rs_state_prog(st);
	struct rs_form_rule *fr = rs_form_rules(st);
	uint32_t *pool = rs_form_pool(st), used = st->pool / 4 + 1, off = RS_HDR_LEN, i, j, c, s = 1, first;
	struct rs_shape sh;
	struct rs_walk w;
	int opens;

	for (i = 0; i < st->n_rules; i++) {
		const uint8_t *r = prog + off;

		rs_rule_shape(r, &sh);
		rs_walk_start(&w, r);
		while ((j = rs_walk_next(&w, &opens)))
			if (rs_op_wants_l4(r[j], r + j + 2))
				st->form_flags |= RS_FORM_L4;
		fr[i].rule = st->prog + off;	/* rs_run finds the rule from the state, not its copy's start */
		fr[i].act = sh.act;
		fr[i].nops = rs_form_nops(r);
		fr[i].nresid = sh.nresid;
		fr[i].resid = used;
		used += sh.nresid;
		for (j = 0; j < sh.nresid; j++) {
			const uint8_t *o = r + sh.resid[j] + 2;

			if (!rs_op_is_ports(r[sh.resid[j]], o)) {
				/* from the state's start, as the classifier has no program's address */
				pool[fr[i].resid + j] = st->prog + off + sh.resid[j];
				continue;
			}
			pool[fr[i].resid + j] = RS_RESID_PORTS | used;
			used = rs_ports_load(pool, used, o);
		}
		off += rs_le16(r);
	}
	rs_form_subs(st)[0].first = RS_SUB_END;	/* the end the classes without subtables share */
	for (c = 0; c < RS_FORM_CLASSES; c++) {
		first = s;
		s = rs_form_class(st, c, s, &used);
		if (s == first) {
			st->class_at[c] = st->subs;
			continue;
		}
		st->class_at[c] = st->subs + first * (uint32_t)sizeof(struct rs_form_sub);
		rs_form_subs(st)[s++].first = RS_SUB_END;
	}
	for (i = 0; i < st->n_rules; i++)	/* where the classes kept their subtables */
		fr[i].state = (uint32_t)((uint8_t *)(rs_rule_states(st) + i) - (uint8_t *)st);
}

/* The frame's value of key field k, as rs_field_get and rs_match_op see it; RS_K_NONE is 0. Read
 * when a subtable compares it, not for every field beforehand: most frames leave a subtable after
 * its first field. Every k from 0 to RS_K_NONE has its case, and the loaded form holds no other
 * (rs_form_class), so the switch has no default: the mix 5 less on x86_64 and on armhf (GCC drops
 * the jump's offset, on x86_64 also its range test). */
static inline __attribute__((__always_inline__)) uint32_t rs_key_value(const struct rs_pkt *p, uint32_t k, uint32_t rx_len)
{
	const uint8_t *b = p->b, *h = b + p->l3;

	switch (k) {
	case RS_F_ETH_TYPE:	return p->eth_type;
	case RS_F_VLAN:		return p->ntags ? (rs_be16(b + 14) & 0xfff) | RS_K_PRESENT : 0;
	case RS_F_VLAN_PCP:	return p->ntags ? rs_be16(b + 14) >> 13 | RS_K_PRESENT : 0;
	case RS_F_IP_PROTO:	return p->proto;
	case RS_F_SRC_PORT:	return rs_be16(b + p->l4);
	case RS_F_DST_PORT:	return rs_be16(b + p->l4 + 2);
	case RS_F_DSCP:		return p->ipv == 4 ? h[1] >> 2U : (uint32_t)(h[0] & 0xf) << 2 | h[1] >> 6;
	case RS_F_TTL:		return p->ipv == 4 ? h[8] : h[7];
	case RS_F_LENGTH:	return rx_len;
	case RS_K_TCP_FLAGS:	return b[p->l4 + 13];
	case RS_K_HAS_VLAN:	return p->ntags > 0;
	case RS_K_ETH:		return rs_be32(b + 6);
	case RS_K_ETH + 1:	return rs_be16(b + 10);
	case RS_K_ETH + 2:	return rs_be32(b);
	case RS_K_ETH + 3:	return rs_be16(b + 4);
	case RS_K_IP4:		return rs_be32(h + 12);
	case RS_K_IP4 + 1:	return rs_be32(h + 16);
	case RS_K_IP6 ... RS_K_IP6 + 7:	/* source words at 8..20, destination at 24..36 */
		return rs_be32(h + 8 + 4 * (k - RS_K_IP6));
	case RS_K_PORT:		/* never a subtable's: rs_class_keys */
	case RS_K_NONE:
		return 0;
	}
	__builtin_unreachable();
}

/* The frame's word of a subtable's head field j, to be masked: read where rs_key_at found it,
 * without rs_key_value's switch (the mix 260 -> 254 on x86_64, 282 -> 280 on armhf; bench/engine.py). */
static inline __attribute__((__always_inline__)) uint32_t rs_sub_key(const struct rs_pkt *p, const struct rs_form_sub *sub,
								 uint32_t j, uint32_t rx_len)
{
	if (__builtin_expect(sub->at[j] < RS_AT_N, 1))
		return rs_be32(p->b + p->at[sub->at[j]] + sub->off[j]);
	return rs_key_value(p, sub->field[j], rx_len);
}

/* A loaded port range op (rs_ports_load) against a frame of a TCP or UDP class. */
static int rs_ports_match(const struct rs_pkt *p, const uint32_t *d)
{
	uint32_t port = rs_be16(p->b + p->l4 + d[0]), j;

	for (j = 0; j < d[1]; j++)
		if (port - d[2 + 2 * j] <= d[3 + 2 * j])
			return 1;
	return 0;
}

/* A rule's residual ops: port ranges loaded, any other from the state's copy of the program (its
 * offset from the state's start, base). */
static int rs_resid_match(const uint8_t *base, const uint32_t *pool, const uint32_t *resid, uint32_t n,
			  const struct rs_pkt *p, uint32_t rx_len)
{
	uint32_t i;

	for (i = 0; i < n; i++) {
		if (resid[i] & RS_RESID_PORTS) {
			if (!rs_ports_match(p, pool + (resid[i] & ~RS_RESID_PORTS)))
				return 0;
		} else if (!rs_match_op(p, base[resid[i]], base + resid[i] + 2, rx_len)) {
			return 0;
		}
	}
	return 1;
}

/* The tail of an entry against the frame (subtables of more than RS_HEAD fields). */
static int rs_tail_match(const uint32_t *pool, const struct rs_form_sub *sub, const uint32_t *entry,
			 const struct rs_pkt *p, uint32_t rx_len)
{
	const uint32_t *field = pool + sub->tail, *mask = field + sub->ntail;
	uint32_t j;

	for (j = 0; j < sub->ntail; j++)
		if ((rs_key_value(p, field[j], rx_len) & mask[j]) != entry[RS_ENTRY_TAIL + j])
			return 0;
	return 1;
}

/* Whether a rule whose head matched the frame matches it: its tail, then its residual ops. Most
 * rules have neither, which their entry's rule word says. Read from the entry, not the rule's
 * form: the classifier then holds no address of the form's rules or the program, which GCC loaded
 * before its loop for every frame (bench/engine.py: the mix 1.2 less on x86_64, 7.6 on armhf). */
static inline __attribute__((__always_inline__)) int rs_entry_rest_match(const struct rs_state *st, const uint32_t *pool,
									   const struct rs_form_sub *sub,
									   const uint32_t *entry, const struct rs_pkt *p,
									   uint32_t rx_len)
{
	if (!(entry[RS_ENTRY_RULE] & RS_ENTRY_REST))
		return 1;
	if (sub->ntail && !rs_tail_match(pool, sub, entry, p, rx_len))
		return 0;
	return !entry[RS_ENTRY_NRESID] || rs_resid_match((const uint8_t *)st, pool, pool + entry[RS_ENTRY_RESID],
							 entry[RS_ENTRY_NRESID], p, rx_len);
}

/* Whether the head words after the first of an entry match the frame: read again when needed, not
 * held from the hash, as the four words held through a bucket's walk cost x86_64 5 moves there. A
 * head of fewer fields has 0 in the rest (RS_K_NONE under a zero mask). */
static inline __attribute__((__always_inline__)) int rs_head_rest_eq(const struct rs_pkt *p, const struct rs_form_sub *sub,
									 const uint32_t *entry, uint32_t rx_len)
{
	return !(((rs_sub_key(p, sub, 1, rx_len) & sub->mask[1]) ^ entry[RS_ENTRY_KEY + 1]) |
		 ((rs_sub_key(p, sub, 2, rx_len) & sub->mask[2]) ^ entry[RS_ENTRY_KEY + 2]) |
		 ((rs_sub_key(p, sub, 3, rx_len) & sub->mask[3]) ^ entry[RS_ENTRY_KEY + 3]));
}

/* Whether the one rule of a subtable whose first head word matched the frame matches it: its one
 * entry, without hashing or a bucket. */
static inline __attribute__((__always_inline__)) int rs_one_match(const struct rs_state *st, const uint32_t *pool,
								  const struct rs_form_sub *sub,
								  const struct rs_pkt *p, uint32_t rx_len)
{
	const uint32_t *entry = pool + sub->entry;

	return (sub->nhead < 2 || rs_head_rest_eq(p, sub, entry, rx_len)) &&
	       rs_entry_rest_match(st, pool, sub, entry, p, rx_len);
}

/* The index of the first rule that matches the frame, of class c (rs_pkt_parse), n_rules for none. */
static inline __attribute__((__always_inline__)) uint32_t rs_classify(const struct rs_state *st, const struct rs_pkt *p,
								  uint32_t c, uint32_t port, uint32_t rx_len)
{
	const uint8_t *base = (const uint8_t *)st;
	const struct rs_form_sub *sub = (const void *)(base + st->class_at[RS_FORM_CLASS(c, port)]);
	const uint32_t *pool = rs_form_pool(st);
	uint32_t best = st->n_rules, e, h, w0;

	for (; sub->first < best; sub++) {	/* to the class's RS_SUB_END at most */
		/* rs_sub_key's way for a field read where it lies, without its test (every parsed frame
		 * has the 4 bytes at its start the other kinds read) */
		if ((rs_ne32(p->b + p->at[sub->ne_at] + sub->ne_off) & sub->ne_mask) != sub->ne_key)
			continue;	/* most frames leave a one-rule subtable here */
		if (sub->kind <= RS_SUB_ONE_AT) {
			if (sub->kind == RS_SUB_ONE_AT_HEAD || rs_one_match(st, pool, sub, p, rx_len))
				best = sub->first;
			continue;
		}
		w0 = rs_sub_key(p, sub, 0, rx_len) & sub->mask[0];
		if (sub->kind == RS_SUB_ONE) {
			if (w0 == pool[sub->entry + RS_ENTRY_KEY] && rs_one_match(st, pool, sub, p, rx_len))
				best = sub->first;
			continue;
		}
		/* a head of one field hashes w0 alone: the other terms are 0 */
		h = sub->nhead > 1 ? rs_head_hash(w0, rs_sub_key(p, sub, 1, rx_len) & sub->mask[1],
						  rs_sub_key(p, sub, 2, rx_len) & sub->mask[2],
						  rs_sub_key(p, sub, 3, rx_len) & sub->mask[3]) : w0 * RS_HASH_MUL0;
		e = pool[sub->slots + rs_bucket(sub, h)];
		for (; e; e = pool[e + RS_ENTRY_NEXT]) {
			const uint32_t *entry = pool + e, rule = entry[RS_ENTRY_RULE] & ~RS_ENTRY_REST;

			if (entry[RS_ENTRY_KEY] != w0)
				continue;	/* before the rule's order: most candidates leave here */
			if (rule >= best)
				break;
			if (sub->nhead > 1 && !rs_head_rest_eq(p, sub, entry, rx_len))
				continue;
			if (!rs_entry_rest_match(st, pool, sub, entry, p, rx_len))
				continue;
			best = rule;
			break;
		}
	}
	return best;
}

/* ---- checksums (RFC 1071 sums, RFC 1624 updates) ---- */

/* A 32-bit sum folded to 16 bits with end-around carry: s plus s rotated by 16 holds, in its top
 * half, high + low + the carry out of the low halves' sum, which is what folding until no carry is
 * left gives (on ARM an add with a rotated operand and a shift; the loop took about 9). */
static uint32_t rs_csum_fold(uint32_t s)
{
	return (s + rs_rotl32(s, 16)) >> 16;
}

/* The change of a 16-bit word m -> m_new as a sum to fold into a checksum: ~m + m', added up over
 * the words of a rewrite (at most 0x1fffe each: an address's eight stay far from overflow). */
static uint32_t rs_csum_delta(uint32_t m, uint32_t m_new)
{
	return (~m & 0xffff) + m_new;
}

/* RFC 1624 eqn 3 for a sum of changes: HC' = ~(~HC + delta). One's complement addition is
 * associative: the sum of several words' changes gives what they give one at a time. */
static uint32_t rs_csum_add(uint32_t hc, uint32_t delta)
{
	return ~rs_csum_fold((~hc & 0xffff) + delta) & 0xffff;
}

/* RFC 1624 eqn 3: HC' = ~(~HC + ~m + m') */
static uint32_t rs_csum_update(uint32_t hc, uint32_t m, uint32_t m_new)
{
	return rs_csum_add(hc, rs_csum_delta(m, m_new));
}

static void rs_put_be16(uint8_t *b, uint32_t v)
{
	b[0] = (uint8_t)(v >> 8);
	b[1] = (uint8_t)v;
}

static int rs_has_pseudo_hdr(const struct rs_pkt *p)
{
	return p->proto == RS_IPPROTO_TCP || p->proto == RS_IPPROTO_UDP ||
	       (p->proto == RS_IPPROTO_ICMPV6 && p->ipv == 6);
}

/* The L4 checksum hc after a sum of changes (rs_csum_delta), both in one byte order: a UDP
 * checksum of 0 (none) stays 0, a computed 0 is sent as 0xffff (0 and 0xffff read the same in
 * either order). */
static uint32_t rs_l4_csum_next(const struct rs_pkt *p, uint32_t hc, uint32_t delta)
{
	if (p->proto == RS_IPPROTO_UDP && hc == 0)
		return 0;
	hc = rs_csum_add(hc, delta);
	return p->proto == RS_IPPROTO_UDP && hc == 0 ? 0xffff : hc;
}

/* Folds a sum of changes of big-endian words into the L4 checksum. */
static void rs_l4_csum_add(struct rs_pkt *p, uint32_t delta)
{
	rs_put_be16(p->b + p->ck, rs_l4_csum_next(p, rs_be16(p->b + p->ck), delta));
}

/* The same for the change of one 16-bit quantity m -> m_new. */
static void rs_l4_csum_update(struct rs_pkt *p, uint32_t m, uint32_t m_new)
{
	rs_l4_csum_add(p, rs_csum_delta(m, m_new));
}

static int rs_overlaps(uint32_t a, uint32_t n, uint32_t b, uint32_t m)
{
	return a < b + m && b < a + n;
}

/* The 16-bit word at w of a region ending at end; bytes past it count 0. */
static uint32_t rs_region_word(uint32_t hi, uint32_t lo, uint32_t w, uint32_t end)
{
	return hi << 8 | (w + 1 < end ? lo : 0);
}

/*
 * Folds the change of the 16-bit word at w (old -> nw, bytes past the frame
 * counting 0) into the checksums covering it: the IPv4 header's when fix_ip
 * (IPv4 frames only) and the word lies in the header, the L4 one when fix_l4 and the word lies
 * in the L4 segment or in the pseudo-header's addresses. Inlined: the word
 * write of every rewrite (rs_pkt_write_word) would otherwise pay a call.
 */
static inline __attribute__((__always_inline__)) void rs_word_changed(struct rs_pkt *p, uint32_t w, uint32_t old,
								uint32_t nw, int fix_ip, int fix_l4)
{
	/* fix_ip only for IPv4, whose header ends where the L4 header starts */
	if (fix_ip && w >= p->l3 && w < p->l4)
		rs_put_be16(p->b + p->l3 + 10, rs_csum_update(rs_be16(p->b + p->l3 + 10), old, nw));
	if (!fix_l4)
		return;
	if (w >= p->l4 && w < p->l3_end)
		rs_l4_csum_update(p, rs_region_word(old >> 8, old & 0xff, w, p->l3_end),
				  rs_region_word(nw >> 8, nw & 0xff, w, p->l3_end));
	else if (rs_has_pseudo_hdr(p) && w >= p->l3 + (p->ipv == 4 ? 12 : 8) &&
		 w < p->l3 + (p->ipv == 4 ? 20 : 40))
		rs_l4_csum_update(p, old, nw);
}

/*
 * The one write primitive: bytes [off, off+n) become (old & ~mask) |
 * (val & mask) (mask NULL: val), within len. For every 16-bit word that
 * changes, the IPv4 header checksum (word in the IPv4 header) and the
 * L4 checksum (word in the L4 segment, or in the pseudo-header addresses
 * for TCP/UDP/ICMPv6) are updated. A write overlapping a checksum field
 * leaves that checksum as written. Words are aligned on the frame since
 * every checksum region starts at an even offset. Returns 1 if any byte
 * changed.
 */
static int rs_pkt_write(struct rs_pkt *p, uint32_t off, uint32_t n,
		     const uint8_t *val, const uint8_t *mask)
{
	uint32_t w, end = off + n, changed = 0;
	int fix_ip, fix_l4;

	if (off > p->len || n > p->len - off)
		return 0;
	fix_ip = p->ipv == 4 && !rs_overlaps(off, n, p->l3 + 10, 2);
	fix_l4 = p->ck && !rs_overlaps(off, n, p->ck, 2);

	for (w = off & ~1u; w < end; w += 2) {
		uint32_t o[2], nw[2], j;

		for (j = 0; j < 2; j++) {
			uint32_t at = w + j;

			o[j] = nw[j] = at < p->len ? p->b[at] : 0;
			if (at < off || at >= end)
				continue;
			if (mask)
				nw[j] = (o[j] & ~(uint32_t)mask[at - off]) |
					(val[at - off] & mask[at - off]);
			else
				nw[j] = val[at - off];
			p->b[at] = (uint8_t)nw[j];
		}
		if (o[0] == nw[0] && o[1] == nw[1])
			continue;
		changed = 1;
		rs_word_changed(p, w, o[0] << 8 | o[1], nw[0] << 8 | nw[1], fix_ip, fix_l4);
	}
	return changed;
}

/*
 * The same for one aligned 16-bit word, the write of nearly every rewrite:
 * (old & ~mask) | (v & mask) at an even off inside the frame. The checksums
 * follow exactly as in rs_pkt_write, which writes any other shape and every
 * write of the reference (the fuzzer holds the two to the same bytes).
 */
static int rs_pkt_write_word(struct rs_pkt *p, uint32_t off, uint32_t v, uint32_t mask)
{
	uint32_t old, nw;

	if ((p->mode & RS_PKT_REFERENCE) || (off & 1) || off + 2 > p->len) {
		uint8_t b[2], m[2];

		rs_put_be16(b, v);
		rs_put_be16(m, mask);
		return rs_pkt_write(p, off, 2, b, m);
	}
	old = rs_be16(p->b + off);
	nw = (old & ~mask) | (v & mask);
	if (nw == old)
		return 0;
	rs_put_be16(p->b + off, nw);
	rs_word_changed(p, off, old, nw, p->ipv == 4 && off != p->l3 + 10, p->ck && off != p->ck);
	return 1;
}

static int rs_pkt_write16(struct rs_pkt *p, uint32_t off, uint32_t v)
{
	return rs_pkt_write_word(p, off, v, 0xffff);
}

/* ---- run context ---- */

/* What the actions of a matched rule work on: the frame, its rule's state, and its verdict, whose
 * flags, copies and delay (the departure as a wait after arrival) they write as they go, from the
 * zeros rs_run_with starts it with. What only random and timing actions read (the state, the
 * arrival, the rule's flags) they take as arguments: a context holding them cost every matched
 * frame their stores, and copying the verdict's fields out of it at the end (the mix 244 -> 242 on
 * x86_64; armhf's matched frames 5 fewer in rs_run; bench/engine.py). The program's copy they find
 * from the state (rs_state_prog), not as an argument: rs_run then works its address out nowhere,
 * where GCC did so before the classifier every frame (the mix 3 less on both CPUs). */
struct rs_ctx {
	struct rs_pkt p;
	struct rs_rule_state *rs;
	struct rs_verdict *v;
};

/* the frame's departure so far, for a frame arriving at now */
static uint64_t rs_departure(const struct rs_ctx *c, uint64_t now)
{
	return now + c->v->delay_ns;
}

static void rs_skipped(struct rs_ctx *c)
{
	rs_count(&c->rs->skipped, 1);
	c->v->flags |= RS_VF_SKIPPED;
}

static void rs_modified(struct rs_ctx *c, int changed)
{
	if (changed)
		c->v->flags |= RS_VF_MODIFIED;
}

/* ---- rewriting actions ---- */

static void rs_act_set_eth(struct rs_ctx *c, const uint8_t *o)
{
	if (c->p.mode & RS_PKT_L3) {
		rs_skipped(c);
		return;
	}
	rs_modified(c, rs_pkt_write(&c->p, o[0] == RS_DST ? 0 : 6, 6, o + 1, 0));
}

/* The 32-bit word at a (an address's) becomes the one at v: its change summed into *delta as
 * rs_pkt_write sums it word by word, a 16-bit half that stays adding nothing. Read and written in
 * the CPU's order (rs_ne32): one's complement sums are order-independent. Returns 1 if it changed. */
static inline __attribute__((__always_inline__)) uint32_t rs_addr_word_set(uint8_t *a, const uint8_t *v,
									  uint32_t *delta)
{
	uint32_t old = rs_ne32(a), nw = rs_ne32(v);

	if (old == nw)
		return 0;
	__builtin_memcpy(a, v, 4);
	if ((old ^ nw) >> 16)
		*delta += rs_csum_delta(old >> 16, nw >> 16);
	if ((old ^ nw) & 0xffff)
		*delta += rs_csum_delta(old & 0xffff, nw & 0xffff);
	return 1;
}

/* set_ip (rs_act_set_ip), with reference a constant: the reference's way (rs_run_reference) apart */
static inline __attribute__((__always_inline__)) void rs_set_ip_with(struct rs_ctx *c, const uint8_t *o,
								    int reference)
{
	struct rs_pkt *p = &c->p;
	uint8_t *h = p->b + p->l3;
	uint32_t at = 0, n = 0, i, delta = 0, changed = 0;

	/* the family, 4 or 6 (rs_verify_operands), against the frame's IP version, 0 for none */
	if (o[1] != p->ipv) {
		rs_skipped(c);
		return;
	}
	if (reference) {
		rs_ip_addr_at(p, o[0], o[1], &at, &n);
		rs_modified(c, rs_pkt_write(p, at, n, o + 2, 0));
		return;
	}
	/* the words' changes summed, then folded once into each checksum over the address (the IPv4
	 * header's; TCP's, UDP's and ICMPv6's pseudo-header): what rs_pkt_write does word by word, as
	 * an address overlaps no checksum field (the fuzzer holds the two to the same bytes). IPv4's
	 * one word apart from IPv6's loop: dns-rewrite's frame 424 -> 412 on x86_64 (bench/engine.py). */
	if (p->ipv == 4) {
		if (!rs_addr_word_set(h + rs_ip_addr_off(o[0], RS_FAMILY_IPV4), o + 2, &delta))
			return;
		rs_put_ne16(h + 10, rs_csum_add(rs_ne16(h + 10), delta));
	} else {
		for (i = 0; i < 16; i += 4)
			changed |= rs_addr_word_set(h + rs_ip_addr_off(o[0], RS_FAMILY_IPV6) + i, o + 2 + i, &delta);
		if (!changed)
			return;
	}
	if (p->ck && rs_has_pseudo_hdr(p))
		rs_put_ne16(p->b + p->ck, rs_l4_csum_next(p, rs_ne16(p->b + p->ck), delta));
	c->v->flags |= RS_VF_MODIFIED;
}

/*
 * The same for the IP header's word at l3 + w where no checksum but the IPv4 header's covers it:
 * the TOS and TTL words of IPv4, the first word (traffic class) and the hop limit's of IPv6
 * (neither in a pseudo-header), of an IPv4 frame when ipv4. rs_pkt_write_word, without its search
 * for the checksums over the word: the cost of `set: {dscp}`, `set: {ecn}`, `set: {ttl}` and
 * dec_ttl. v and mask come in the frame's byte order (rs_ne16_of), and the word, the checksum and
 * their sum stay in it: no swaps, and constant masks swapped when compiled (with the IP version
 * as an argument, syn-mark's frame 350 -> 338 on armhf; bench/engine.py). Inlined into its
 * callers, where the word and mask are constants (1 instruction less a mix frame on either CPU),
 * and whose test of the IP version holds here (p->ipv is read again after a write to the frame).
 */
static inline __attribute__((__always_inline__)) int rs_ip_word_write(struct rs_pkt *p, uint32_t w, uint32_t v,
								     uint32_t mask, int ipv4, int reference)
{
	uint8_t *h = p->b + p->l3;
	uint32_t old, nw;

	if (reference)
		return rs_pkt_write_word(p, p->l3 + w, rs_ne16_of(v), rs_ne16_of(mask));
	old = rs_ne16(h + w);
	nw = (old & ~mask) | (v & mask);
	if (nw == old)
		return 0;
	rs_put_ne16(h + w, nw);
	if (ipv4)
		rs_put_ne16(h + 10, rs_csum_update(rs_ne16(h + 10), old, nw));
	return 1;
}

/*
 * The same for a TCP or UDP port, at l4 + w of a frame with that header parsed: inside the L4
 * segment, under the L4 checksum alone (when there is one) and never over it. rs_pkt_write_word,
 * without its search for the checksums over the word: the cost of `set: {src_port, dst_port}`.
 */
static inline __attribute__((__always_inline__)) int rs_port_write(struct rs_pkt *p, uint32_t w, uint32_t v,
								  int reference)
{
	uint8_t *b = p->b + p->l4 + w;
	uint32_t old;

	if (reference)
		return rs_pkt_write_word(p, p->l4 + w, v, 0xffff);
	old = rs_be16(b);
	if (old == v)
		return 0;
	rs_put_be16(b, v);
	if (p->ck)
		rs_l4_csum_update(p, old, v);
	return 1;
}

/* Writes v into the bits of mask (a big-endian 16-bit view) at off. */
static int rs_write_bits16(struct rs_pkt *p, uint32_t off, uint32_t v,
			uint32_t mask)
{
	return rs_pkt_write_word(p, off, v, mask);
}

/* set (rs_act_set_field), with reference a constant (rs_set_ip_with) */
static inline __attribute__((__always_inline__)) void rs_set_field_with(struct rs_ctx *c, const uint8_t *o,
								       int reference)
{
	struct rs_pkt *p = &c->p;
	uint32_t f = o[0], v = rs_le16(o + 1);
	int ch = 0, ok = 1;

	switch (f) {
	case RS_F_DSCP:
	case RS_F_ECN:
		/* IPv4: TOS byte; IPv6: traffic class straddles bytes 0-1 */
		if (p->ipv == 4)
			ch = rs_ip_word_write(p, 0, rs_ne16_of(f == RS_F_DSCP ? v << 2 : v),
					      f == RS_F_DSCP ? rs_ne16_of(0x00fc) : rs_ne16_of(0x0003), 1,
					      reference);
		else if (p->ipv == 6)
			ch = rs_ip_word_write(p, 0, rs_ne16_of(f == RS_F_DSCP ? v << 6 : v << 4),
					      f == RS_F_DSCP ? rs_ne16_of(0x0fc0) : rs_ne16_of(0x0030), 0,
					      reference);
		else
			ok = 0;
		break;
	case RS_F_TTL:
		if (p->ipv == 4)
			ch = rs_ip_word_write(p, 8, rs_ne16_of(v << 8), rs_ne16_of(0xff00), 1, reference);
		else if (p->ipv == 6)
			ch = rs_ip_word_write(p, 6, rs_ne16_of(v), rs_ne16_of(0x00ff), 0, reference);
		else
			ok = 0;
		break;
	case RS_F_SRC_PORT:
	case RS_F_DST_PORT:
		if (p->l4hl && (p->proto == RS_IPPROTO_TCP ||
				p->proto == RS_IPPROTO_UDP))
			ch = rs_port_write(p, f == RS_F_DST_PORT ? 2 : 0, v, reference);
		else
			ok = 0;
		break;
	case RS_F_VLAN:
	case RS_F_VLAN_PCP:
		if (p->ntags)
			ch = rs_write_bits16(p, 14, f == RS_F_VLAN ? v : v << 13,
					  f == RS_F_VLAN ? 0x0fff : 0xe000);
		else
			ok = 0;
		break;
	default:
		ok = 0;
	}
	if (!ok)
		rs_skipped(c);
	rs_modified(c, ch);
}

/*
 * Returns 1 when the frame is dropped for its TTL. One less in the TTL's word (TTL, protocol)
 * changes it by -0x100 whatever the protocol: its checksum delta (rs_csum_delta) is always 0xfeff,
 * added without reading the word (rs_ip_word_write's way, which the reference keeps, cost an
 * IPv4 frame 31 instructions more on x86_64, an IPv6 one 20; bench/engine.py), and into the
 * checksum as the frame holds it (rs_ne16_of: 2 less on x86_64). With reference a constant
 * (rs_set_ip_with).
 */
static inline __attribute__((__always_inline__)) int rs_dec_ttl_with(struct rs_ctx *c, int reference)
{
	struct rs_pkt *p = &c->p;
	uint8_t *h = p->b + p->l3;
	uint32_t ttl;

	if (rs_field_get(p, RS_F_TTL, 0, &ttl)) {
		rs_skipped(c);
		return 0;
	}
	if (ttl <= 1)
		return 1;
	if (reference) {
		if (p->ipv == 4)
			rs_ip_word_write(p, 8, rs_ne16_of((ttl - 1) << 8), rs_ne16_of(0xff00), 1, 1);
		else
			rs_ip_word_write(p, 6, rs_ne16_of(ttl - 1), rs_ne16_of(0x00ff), 0, 1);
	} else if (p->ipv == 4) {
		h[8] = (uint8_t)(ttl - 1);
		rs_put_ne16(h + 10, rs_csum_add(rs_ne16(h + 10), rs_ne16_of(0xfeff)));
	} else {
		h[7] = (uint8_t)(ttl - 1);
	}
	rs_modified(c, 1);	/* the TTL changed */
	return 0;
}

/* The three rewrites most rules make, in two copies: rs_run's, without the reference's ways, and
 * rs_run_reference's. rs_run's are then small enough for GCC to inline into it: the mix 241 -> 233
 * on x86_64, 263 -> 257 a frame on armhf (bench/engine.py). */
static void rs_act_set_ip(struct rs_ctx *c, const uint8_t *o)
{
	rs_set_ip_with(c, o, 0);
}

static void rs_act_set_ip_reference(struct rs_ctx *c, const uint8_t *o)
{
	rs_set_ip_with(c, o, 1);
}

static void rs_act_set_field(struct rs_ctx *c, const uint8_t *o)
{
	rs_set_field_with(c, o, 0);
}

static void rs_act_set_field_reference(struct rs_ctx *c, const uint8_t *o)
{
	rs_set_field_with(c, o, 1);
}

static int rs_act_dec_ttl(struct rs_ctx *c)
{
	return rs_dec_ttl_with(c, 0);
}

static int rs_act_dec_ttl_reference(struct rs_ctx *c)
{
	return rs_dec_ttl_with(c, 1);
}

static void rs_act_push_vlan(struct rs_ctx *c, const uint8_t *o)
{
	struct rs_pkt *p = &c->p;
	uint32_t i;

	if ((p->mode & RS_PKT_L3) || p->cap - p->len < 4 || p->len + 4 > RS_MAX_FRAME) {
		rs_skipped(c);
		return;
	}
	for (i = p->len; i > 12; i--)
		p->b[i + 3] = p->b[i - 1];
	rs_put_be16(p->b + 12, rs_le16(o));
	rs_put_be16(p->b + 14, rs_le16(o + 2));
	p->len += 4;
	c->v->len = p->len;
	c->v->flags |= RS_VF_MODIFIED;
	rs_reparse(p);
}

static void rs_act_pop_vlan(struct rs_ctx *c)
{
	struct rs_pkt *p = &c->p;
	uint32_t i;

	if (!p->ntags) {
		rs_skipped(c);
		return;
	}
	for (i = 12; i + 4 < p->len; i++)
		p->b[i] = p->b[i + 4];
	p->len -= 4;
	c->v->len = p->len;
	c->v->flags |= RS_VF_MODIFIED;
	rs_reparse(p);
}

static void rs_act_payload(struct rs_ctx *c, const uint8_t *o)
{
	uint32_t at;

	if (rs_bytes_at(&c->p, o, &at)) {
		rs_skipped(c);
		return;
	}
	rs_modified(c, rs_pkt_write(&c->p, at, o[3], o + 4, o + 4 + o[3]));
}

/* One's complement sum of [from, to), aligned as in a region starting even. */
static uint32_t rs_csum_span(const uint8_t *b, uint32_t from, uint32_t to)
{
	uint32_t s = 0, i;

	for (i = from; i < to; i++)
		s += (i & 1) ? b[i] : (uint32_t)b[i] << 8;
	return rs_csum_fold(s);
}

/*
 * Shortens the IP packet to end at cut (headers whole, cut < l3_end): the
 * removed bytes leave the L4 checksum, the pseudo-header length follows,
 * then UDP length and IP length are rewritten through rs_pkt_write. Fragments
 * get their IP length only: their L4 checksum covers the whole datagram.
 */
static void rs_shorten_ip(struct rs_pkt *p, uint32_t cut)
{
	uint32_t new_l4 = cut - p->l4;

	if (p->ck && !p->frag) {
		uint32_t old_ph = p->l3_end - p->l4;

		rs_l4_csum_update(p, rs_csum_span(p->b, cut, p->l3_end), 0);
		if (p->proto == RS_IPPROTO_UDP)
			old_ph = rs_be16(p->b + p->l4 + 4);
		if (rs_has_pseudo_hdr(p))
			rs_l4_csum_update(p, old_ph, new_l4);
		if (p->proto == RS_IPPROTO_UDP)
			rs_pkt_write16(p, p->l4 + 4, new_l4);
	}
	if (p->ipv == 4)
		rs_pkt_write16(p, p->l3 + 2, cut - p->l3);
	else
		rs_pkt_write16(p, p->l3 + 4, cut - p->l3 - 40);
}

static void rs_act_truncate(struct rs_ctx *c, const uint8_t *o)
{
	struct rs_pkt *p = &c->p;
	uint32_t cut = rs_le16(o);

	if (cut >= p->len)
		return;
	if (p->ipv && cut >= p->l4 + p->l4hl && cut < p->l3_end)
		rs_shorten_ip(p, cut);
	p->len = cut;
	c->v->len = cut;
	c->v->flags |= RS_VF_MODIFIED;
	rs_reparse(p);
}

/* ---- random and timing actions ---- */

static void rs_act_corrupt(struct rs_ctx *c, const uint8_t *o, struct rs_state *st)
{
	struct rs_pkt *p = &c->p;
	uint32_t start = (p->mode & RS_PKT_L3) ? 0 : RS_ETH_HLEN, bit;

	if (!rs_prng_event(st, rs_le32(o)))
		return;
	if (p->len <= start) {
		rs_skipped(c);
		return;
	}
	/* bit index = draw * nbits / 2^32, nbits < 2^20: no division */
	bit = (uint32_t)(((uint64_t)rs_prng_u32(st) * ((p->len - start) * 8)) >> 32);
	p->b[start + (bit >> 3)] ^= (uint8_t)(1u << (bit & 7));
	rs_count(&c->rs->corrupted, 1);
	c->v->flags |= RS_VF_CORRUPTED | RS_VF_MODIFIED;
}

/*
 * Correlated loss as a two-state chain: after a loss the next frame is lost
 * with c + (1-c)p, after a survivor with (1-c)p. The rate stays p and the
 * lag-1 autocorrelation is c. (netem's u' = (1-c)r + cu narrows u around
 * 1/2, so 10% with 25% correlation loses under 2%: the rate is not kept.)
 * With c = 0 it is the plain draw r < p.
 */
static int rs_act_loss(struct rs_ctx *c, const uint8_t *o, struct rs_state *st)
{
	uint32_t p = rs_le32(o), corr = rs_le32(o + 4);
	uint64_t q = (((1ull << 32) - corr) * (uint64_t)p) >> 32;
	int lost;

	if (c->rs->loss_last)
		q += corr;
	lost = p == RS_PROB_ALWAYS || rs_prng_u32(st) < q;
	c->rs->loss_last = (uint32_t)lost;
	return lost;
}

/* Gilbert-Elliott: survive by the current state, then change state. */
static int rs_act_loss_ge(struct rs_ctx *c, const uint8_t *o, struct rs_state *st)
{
	struct rs_rule_state *rs = c->rs;
	int keep = rs_prng_event(st, rs_le32(o + (rs->ge_bad ? 8 : 12)));

	if (!rs->ge_bad && rs_prng_event(st, rs_le32(o)))
		rs->ge_bad = 1;
	else if (rs->ge_bad && rs_prng_event(st, rs_le32(o + 4)))
		rs->ge_bad = 0;
	return !keep;
}

static const int32_t *rs_dist_table(uint32_t dist)
{
	switch (dist) {
	case RS_DIST_NORMAL:	return rs_dist_normal;
	case RS_DIST_PARETO:	return rs_dist_pareto;
	default:		return rs_dist_paretonormal;
	}
}

/* (a * u) >> 32 for a < 2^40, without a 128-bit product */
static uint64_t rs_mul_u32_shr32(uint64_t a, uint32_t u)
{
	return (a >> 32) * u + (((a & 0xffffffffull) * u) >> 32);
}

/*
 * Signed offset time + jitter * D of a delay with jitter, D from u in [0, 2^32): uniform gives
 * [time - jitter, time + jitter); tables give D = T[i] + (T[i+1] - T[i]) *
 * f / 65536 (i = u >> 22, f = bits 21..6 of u, quotient truncated toward
 * zero) in 1/65536 units, then |jitter * D| >> 16 with D's sign. Clamped
 * at 0.
 */
static uint64_t rs_delay_offset(const uint8_t *o, uint32_t u)
{
	uint64_t time = rs_le64(o), jitter = rs_le64(o + 8), mag;
	const int32_t *t;
	int64_t d, diff;
	uint32_t i, f;

	if (o[16] == RS_DIST_UNIFORM) {
		mag = rs_mul_u32_shr32(2 * jitter, u);
		return time + mag >= jitter ? time + mag - jitter : 0;
	}
	t = rs_dist_table(o[16]);
	i = u >> 22;
	f = (u >> 6) & 0xffff;
	diff = (int64_t)t[i + 1] - t[i];
	if (diff >= 0)
		d = t[i] + (int64_t)(((uint64_t)diff * f) >> 16);
	else
		d = t[i] - (int64_t)(((uint64_t)-diff * f) >> 16);
	if (d >= 0)
		return time + ((jitter * (uint64_t)d) >> 16);
	mag = (jitter * (uint64_t)-d) >> 16;
	return time >= mag ? time - mag : 0;
}

/* Inlined into the entries: as a call, a fixed delay (per-host rules) cost 5 instructions more on
 * x86_64 and 7 on armhf (bench/engine.py). */
static inline __attribute__((__always_inline__)) void rs_act_delay(struct rs_ctx *c, const uint8_t *o,
								   struct rs_state *st, uint64_t now, uint32_t rflags)
{
	struct rs_rule_state *rs = c->rs;
	uint64_t wait = c->v->delay_ns;

	/* reorder, which the verifier puts right before its list's one delay, sent the frame ahead */
	if (c->v->flags & RS_VF_REORDERED)
		return;
	/* without jitter every distribution gives the time: no draw, as netem's tabledist */
	if (rs_le64(o + 8))
		wait += rs_delay_offset(o, rs_prng_corr(st, rs_le32(o + 17), &rs->delay_last));
	else
		wait += rs_le64(o);
	if (!(rflags & RS_RF_REORDER_ON_JITTER) && now + wait < rs->last_departure)
		wait = rs->last_departure - now;
	c->v->delay_ns = wait;
	rs->last_departure = now + wait;
	rs_count(&rs->delayed, 1);
}

/* netem: if (gap == 0 || counter < gap - 1 || draw >= prob) delay, ++counter */
static void rs_act_reorder(struct rs_ctx *c, const uint8_t *o, struct rs_state *st)
{
	struct rs_rule_state *rs = c->rs;
	uint32_t prob = rs_le32(o), gap = rs_le32(o + 4);

	if (gap == 0 || rs->reorder_count < gap - 1 ||
	    !rs_prng_event(st, prob)) {
		rs->reorder_count++;
		return;
	}
	rs->reorder_count = 0;
	rs_count(&rs->reordered, 1);
	c->v->flags |= RS_VF_REORDERED;	/* the delay after it does not apply (rs_act_delay) */
}

/* The rule's rate queue, the frames that left by now taken off it; null for a state that does not
 * hold it (cannot happen once init ran). */
static uint64_t *rs_rate_queue(struct rs_ctx *c, struct rs_state *st, uint64_t now)
{
	struct rs_rule_state *rs = c->rs;
	uint64_t *q;

	if (!rs->rate_limit || rs->rate_queue > st->size ||
	    rs->rate_limit > (st->size - rs->rate_queue) / 8)
		return 0;
	/* the state is 8-aligned and queue offsets are multiples of 8 */
	q = (uint64_t *)(void *)((uint8_t *)st + rs->rate_queue);
	while (rs->rate_count && q[rs->rate_head] <= now) {
		if (++rs->rate_head == rs->rate_limit)
			rs->rate_head = 0;
		rs->rate_count--;
	}
	return q;
}

static void rs_rate_push(struct rs_rule_state *rs, uint64_t *q, uint64_t departure)
{
	uint32_t tail = rs->rate_head + rs->rate_count;

	if (tail >= rs->rate_limit)
		tail -= rs->rate_limit;
	q[tail] = departure;
	rs->rate_count++;
}

/* The frame's size for a rate: its length and the op's overhead (i16 at o), at least 0. */
static uint64_t rs_rate_bytes(const struct rs_ctx *c, const uint8_t *o)
{
	int64_t sz = (int64_t)c->p.len + (int16_t)rs_le16(o);

	return sz > 0 ? (uint64_t)sz : 0;
}

/* Returns 1 when the rule's queue is full (frame dropped). */
static int rs_act_rate(struct rs_ctx *c, const uint8_t *o, struct rs_state *st, uint64_t now)
{
	struct rs_rule_state *rs = c->rs;
	uint64_t rate = rs_le64(o), start, *q = rs_rate_queue(c, st, now);

	if (!q)
		return 0;
	if (rs->rate_count >= rs_le16(o + 10))	/* this list's limit: phases may differ */
		return 1;
	start = rs_departure(c, now) > rs->rate_busy_until ? rs_departure(c, now) : rs->rate_busy_until;
	rs->rate_busy_until = start + rs_div64(rs_rate_bytes(c, o + 8) * 8 * RS_NSEC_PER_SEC, rate);
	c->v->delay_ns = rs->rate_busy_until - now;
	rs_rate_push(rs, q, rs->rate_busy_until);
	return 0;
}

/* Time zero of this load (rs_state_start), or now's if none was set. */
static uint64_t rs_epoch(struct rs_state *st, uint64_t now)
{
	if (!st->epoch_set) {
		st->epoch_load = st->epoch_first = now;
		st->epoch_set = 1;
	}
	return st->epoch_load;
}

/*
 * Delivery traces (RS_A_RATE_TRACE): the rule's state holds the opportunity in use (trace_at, at
 * rate_busy_until, in the period starting at trace_cycle) and the bytes it has left. The next
 * opportunity follows the one in use by its delta; after the last comes the next period's first.
 */
static void rs_trace_next(struct rs_rule_state *rs, const uint8_t *t)
{
	uint32_t k = rs->trace_at + 1;
	uint64_t at = rs->rate_busy_until;

	if (k >= rs_le32(t + 8)) {
		k = 0;
		rs->trace_cycle += (uint64_t)rs_le32(t + 4) * 1000000;
		at = rs->trace_cycle;
	}
	rs->trace_at = k;
	rs->rate_busy_until = at + (uint64_t)rs_le16(t + RS_TRACE_HDR_LEN + 2 * k) * 1000000;
	rs->trace_left = RS_TRACE_OPP_BYTES;
}

/* The first opportunity at or after time, with all its bytes. */
static void rs_trace_seek(struct rs_ctx *c, const uint8_t *t, uint64_t time, struct rs_state *st,
			  uint64_t now)
{
	struct rs_rule_state *rs = c->rs;
	uint64_t epoch = rs_epoch(st, now), period = (uint64_t)rs_le32(t + 4) * 1000000, start;

	/* from where it is, unless that is a period or more behind (or nowhere yet): then from the
	 * first opportunity of time's period */
	if (!rs->rate_busy_until || time - rs->rate_busy_until >= period) {
		start = epoch;
		if (time > epoch)
			start += rs_div64(time - epoch, period) * period;
		rs->trace_cycle = start - period;	/* mod 2^64: the next period is start's */
		rs->trace_at = rs_le32(t + 8) - 1;
		rs_trace_next(rs, t);
	}
	while (rs->rate_busy_until < time)
		rs_trace_next(rs, t);
	rs->trace_left = RS_TRACE_OPP_BYTES;
}

/* Returns 1 when the rule's queue is full (frame dropped). */
static int rs_act_rate_trace(struct rs_ctx *c, const uint8_t *o, struct rs_state *st,
			     uint64_t now)
{
	struct rs_rule_state *rs = c->rs;
	uint64_t bytes, *q = rs_rate_queue(c, st, now);
	const uint8_t *t = rs_state_prog(st) + st->traces;
	uint32_t k;

	if (!q)
		return 0;
	if (rs->rate_count >= rs_le16(o + 4))
		return 1;
	for (k = 0; k < rs_le16(o); k++)
		t += rs_le32(t);
	if (rs_departure(c, now) > rs->rate_busy_until || !rs->rate_busy_until)
		rs_trace_seek(c, t, rs_departure(c, now), st, now);
	/* its bytes go out in the opportunities from the one in use on; it leaves with its last */
	for (bytes = rs_rate_bytes(c, o + 2); bytes > rs->trace_left; rs_trace_next(rs, t))
		bytes -= rs->trace_left;
	rs->trace_left -= (uint32_t)bytes;
	c->v->delay_ns = rs->rate_busy_until - now;
	rs_rate_push(rs, q, rs->rate_busy_until);
	return 0;
}

/* One action op of rule r; returns the reason it dropped the frame, RS_R_NONE if it did not. The
 * state and the arrival are for random and timing actions (struct rs_ctx). */
static inline __attribute__((__always_inline__)) uint32_t rs_run_action(struct rs_ctx *c, uint32_t op,
									 const uint8_t *o, const uint8_t *r,
									 struct rs_state *st,
									 uint64_t now, int reference)
{
	switch (op) {
	case RS_A_SET_ETH:	rs_act_set_eth(c, o); break;
	/* reference is a constant: one direct call */
	case RS_A_SET_IP:	(reference ? rs_act_set_ip_reference : rs_act_set_ip)(c, o); break;
	case RS_A_SET_FIELD:	(reference ? rs_act_set_field_reference : rs_act_set_field)(c, o); break;
	case RS_A_DEC_TTL:
		if (reference ? rs_act_dec_ttl_reference(c) : rs_act_dec_ttl(c)) {
			rs_count(&c->rs->dropped, 1);
			return RS_R_TTL;
		}
		break;
	case RS_A_PUSH_VLAN:	rs_act_push_vlan(c, o); break;
	case RS_A_POP_VLAN:	rs_act_pop_vlan(c); break;
	case RS_A_PAYLOAD:	rs_act_payload(c, o); break;
	case RS_A_TRUNCATE:	rs_act_truncate(c, o); break;
	case RS_A_DROP:
		rs_count(&c->rs->dropped, 1);
		return RS_R_RULE;
	case RS_A_DUPLICATE:
		if (rs_prng_event(st, rs_le32(o + 1))) {
			c->v->copies += o[0];
			rs_count(&c->rs->duplicated, o[0]);	/* taken back if the frame is dropped */
		}
		break;
	case RS_A_CORRUPT:	rs_act_corrupt(c, o, st); break;
	case RS_A_LOSS:
	case RS_A_LOSS_GE:
		if (op == RS_A_LOSS ? rs_act_loss(c, o, st) : rs_act_loss_ge(c, o, st)) {
			rs_count(&c->rs->lost, 1);
			return RS_R_LOSS;
		}
		break;
	case RS_A_DELAY:	rs_act_delay(c, o, st, now, r[3]); break;
	case RS_A_REORDER:	rs_act_reorder(c, o, st); break;
	case RS_A_RATE:
	case RS_A_RATE_TRACE:
		if (op == RS_A_RATE ? rs_act_rate(c, o, st, now) : rs_act_rate_trace(c, o, st, now)) {
			rs_count(&c->rs->queue_drops, 1);
			return RS_R_QUEUE;
		}
		break;
	}
	return RS_R_NONE;
}

/* Runs the actions; returns a drop reason or RS_R_NONE. Inlined into the entries: as a call it
 * cost a matching frame 6 to 9 instructions more (bench/engine.py). */
static inline __attribute__((__always_inline__)) uint32_t rs_run_actions(struct rs_ctx *c, const uint8_t *r,
									  uint32_t off, uint32_t nops,
									  struct rs_state *st,
									  uint64_t now, int reference)
{
	const uint8_t *a = r + off;	/* a pointer, not an offset: 3 instructions less an action on x86_64 */
	uint32_t reason;

	for (; nops; nops--) {
		uint32_t op = a[0];
		const uint8_t *o = a + 2;

		a += RS_OP_HDR_LEN + a[1];
		reason = rs_run_action(c, op, o, r, st, now, reference);
		if (reason != RS_R_NONE)
			return reason;
	}
	return RS_R_NONE;
}

static struct rs_trace_event *rs_trace_add(struct rs_trace *t, uint32_t kind, uint32_t rule)
{
	struct rs_trace_event *e = t->n < t->cap ? t->ev + t->n : 0;

	t->n++;
	if (e) {
		e->kind = kind;
		e->rule = rule;
		e->a = e->b = e->c = e->d = 0;
	}
	return e;
}

/* rs_run_actions, writing each action and the frame after it into the trace. */
static uint32_t rs_run_actions_traced(struct rs_ctx *c, const uint8_t *r, uint32_t off, uint32_t nops,
				      struct rs_state *st, uint64_t now,
				      uint32_t rule, struct rs_trace *t)
{
	uint32_t k, reason = RS_R_NONE, i;

	for (k = 0; k < nops && reason == RS_R_NONE; k++) {
		uint32_t op = r[off];
		const uint8_t *o = r + off + 2;
		struct rs_trace_event *e;

		off += RS_OP_HDR_LEN + r[off + 1];
		reason = rs_run_action(c, op, o, r, st, now, 1);
		e = rs_trace_add(t, RS_T_ACTION, rule);
		if (e) {
			e->a = k;
			e->b = op;
			e->c = c->p.len;
			e->d = reason;
		}
		if (k < t->nframes && c->p.len <= t->frame_cap)
			for (i = 0; i < c->p.len; i++)
				t->frames[k * t->frame_cap + i] = c->p.b[i];
	}
	return reason;
}

/* ---- schedules ---- */

/*
 * The phase of a scheduled rule for a frame arriving at now, into its state: which phase, its
 * action list, and the times it holds, so that the next frames find it without this walk. Time
 * zero is the state's (rs_state_start), or this frame's if none was set. Frames before it get
 * the first phase; without RS_RF_REPEAT the last phase holds for ever.
 */
static void rs_phase_find(struct rs_state *st, struct rs_rule_state *rs, const uint8_t *r, uint64_t now)
{
	uint32_t j, n = rs_le16(r + 6), off = rs->phases;
	uint64_t epoch, t, base, d;

	epoch = rs_epoch(st, now);
	if (r[3] & RS_RF_KEEP_TIME)
		epoch = st->epoch_first;
	t = now > epoch ? now - epoch : 0;
	base = epoch;
	if ((r[3] & RS_RF_REPEAT) && t >= rs->cycle_ns) {
		uint64_t k = rs_div64(t, rs->cycle_ns);

		base += k * rs->cycle_ns;
		t -= k * rs->cycle_ns;
	}
	for (j = 0; ; j++) {
		d = rs_le64(r + off);
		if (t < d || j == n - 1)
			break;
		t -= d;
		base += d;
		off += rs_le16(r + off + 10);
	}
	rs->phase = j;
	rs->phase_start = now < epoch ? 0 : base;
	rs->phase_end = (j == n - 1 && !(r[3] & RS_RF_REPEAT)) ? ~0ull : base + d;
	/* an OWN phase runs the rule's own actions, which the caller has found already: 0 says so */
	rs->phase_act = (r[off + 9] & RS_PHF_OWN) ? 0 : off + RS_PHASE_HDR_LEN;
	rs->phase_nops = r[off + 8];
}

/* ---- entry point ---- */

/* Whether rs_state_init() set state up (with its program's copy: nothing to check against). */
static int rs_state_ready(const struct rs_state *st)
{
	return st && st->size;
}

/* The frame is dropped: counted by the way it went, not as dropped (struct rs_counters). */
static void rs_verdict_drop(struct rs_verdict *v, uint32_t reason)
{
	v->verdict = RS_V_DROP;
	v->reason = reason;
	v->copies = 0;
	v->delay_ns = 0;
}

static int rs_direction_ok(uint32_t pflags, uint32_t port)
{
	return (pflags & (port == RS_PORT_A ? RS_PF_FWD_A_TO_B : port == RS_PORT_B ? RS_PF_FWD_B_TO_A : 0)) != 0;
}

/* What the parser found, into the trace (RS_T_PARSE): nothing of a frame rs_pkt_parse refused
 * before parsing (no frame, or longer than its buffer), whose fields it left unset. */
static void rs_trace_parse(struct rs_trace *t, const struct rs_pkt *p, int malformed)
{
	struct rs_trace_event *e = rs_trace_add(t, RS_T_PARSE, malformed != 0);

	if (e && p->b && p->len <= p->cap && p->len <= RS_MAX_FRAME) {
		e->a = p->eth_type;
		e->b = p->ntags | p->ipv << 8 | p->proto << 16;
		e->c = p->l3 | (p->has_l4off ? p->l4 : 0) << 16;
		e->d = p->l4hl;
	}
}

/* inlined into every entry: rs_run pays no call for the reference's sake, and its trace (always
 * null) is compiled out */
static inline __attribute__((__always_inline__)) void rs_run_with(void *state, uint8_t *frame, uint32_t len, uint32_t cap,
			uint32_t port, uint32_t run_flags, uint64_t now_ns, struct rs_verdict *v,
			int reference, struct rs_trace *trace)
{
	struct rs_state *st = state;
	struct rs_ctx c;
	uint32_t n, i, off = RS_HDR_LEN, act = 0, nops, reason;
	const uint8_t *r = 0;
	int cls;	/* the frame's class, or -1 for a malformed frame */

	v->verdict = RS_V_FORWARD;
	v->reason = RS_R_NONE;
	v->len = len;
	v->copies = 0;
	v->rule = -1;
	v->flags = 0;
	v->delay_ns = 0;

	/* a state rs_state_init() did not set up: pass */
	if (!rs_state_ready(st))
		return;

	if (!rs_direction_ok(st->prog_flags, port)) {
		rs_count(&st->counters.direction, 1);
		rs_verdict_drop(v, RS_R_DIRECTION);
		return;
	}

	cls = rs_pkt_parse(&c.p, frame, len, cap, run_flags,
			   reference ? RS_PKT_L4 | RS_PKT_REFERENCE : st->form_flags & RS_FORM_L4);
	if (trace)
		rs_trace_parse(trace, &c.p, cls < 0);
	if (cls < 0) {
		rs_count(&st->counters.malformed, 1);
		v->flags = RS_VF_MALFORMED;
		if (st->prog_flags & RS_PF_MALFORMED_DROP)
			rs_verdict_drop(v, RS_R_MALFORMED);
		return;
	}

	n = st->n_rules;
	if (reference) {
		/* every rule in turn, as the program lists them */
		for (i = 0; i < n; i++) {
			struct rs_trace_event *e = trace ? rs_trace_add(trace, RS_T_RULE, i) : 0;

			r = rs_state_prog(st) + off;
			if (rs_rule_matches(&c.p, r, port, len, &act)) {
				if (e)
					e->a = 1;
				break;
			}
			if (e)
				rs_rule_miss(&c.p, r, port, len, e);
			off += rs_le16(r);
		}
	} else {
		i = rs_classify(st, &c.p, (uint32_t)cls, port, len);
		if (i < n) {
			r = (const uint8_t *)st + rs_form_rules(st)[i].rule;
			act = rs_form_rules(st)[i].act;
			nops = rs_form_rules(st)[i].nops;
			c.rs = (struct rs_rule_state *)(void *)((uint8_t *)st + rs_form_rules(st)[i].state);
		}
	}
	if (i >= n) {	/* n: none (rs_classify never gives more) */
		rs_count(&st->counters.unmatched, 1);
		/* the program's flags, not the state's copy the direction test read: held across
		 * rs_classify, that cost x86_64 1 to 4 more */
		if (rs_le16(rs_state_prog(st) + 6) & RS_PF_DEFAULT_DROP)
			rs_verdict_drop(v, RS_R_DEFAULT);
		return;
	}

	if (reference) {
		c.rs = rs_rule_states(st) + i;
		nops = rs_form_nops(r);
	}
	c.v = v;
	rs_count(&c.rs->matched, 1);
	v->rule = (int32_t)i;

	if (nops & RS_FORM_SCHEDULED) {
		nops = r[5];
		if (now_ns < c.rs->phase_start || now_ns >= c.rs->phase_end)
			rs_phase_find(st, c.rs, r, now_ns);
		if (c.rs->phase_act) {
			act = c.rs->phase_act;
			nops = c.rs->phase_nops;
		}
	}
	/* apart from matched++: in one block the compiler paired the two sums in SSE registers, 4
	 * instructions more on x86_64 (bench/engine.py) */
	rs_count(&c.rs->bytes, len);
	reason = trace ? rs_run_actions_traced(&c, r, act, nops, st, now_ns, i, trace) :
			 rs_run_actions(&c, r, act, nops, st, now_ns, reference);
	if (reason != RS_R_NONE) {
		/* duplicated counts copies that leave: counted by the action, not for every frame that
		 * leaves (a test of the copies each: the mix 1 less on x86_64) */
		c.rs->duplicated -= v->copies;
		rs_verdict_drop(v, reason);
	}
}

void rs_run(void *state, uint8_t *frame, uint32_t len, uint32_t cap, uint32_t port,
	    uint32_t run_flags, uint64_t now_ns, struct rs_verdict *v)
{
	rs_run_with(state, frame, len, cap, port, run_flags, now_ns, v, 0, 0);
}

void rs_run_reference(void *state, uint8_t *frame, uint32_t len, uint32_t cap, uint32_t port,
		      uint32_t run_flags, uint64_t now_ns, struct rs_verdict *v)
{
	rs_run_with(state, frame, len, cap, port, run_flags, now_ns, v, 1, 0);
}

void rs_run_traced(void *state, uint8_t *frame, uint32_t len, uint32_t cap, uint32_t port,
		   uint32_t run_flags, uint64_t now_ns, struct rs_verdict *v, struct rs_trace *trace)
{
	if (trace)
		trace->n = 0;
	rs_run_with(state, frame, len, cap, port, run_flags, now_ns, v, 1, trace);
}

int32_t rs_rule_for(const void *state, uint8_t *frame, uint32_t len, uint32_t port, uint32_t run_flags)
{
	const struct rs_state *st = state;
	struct rs_pkt p;
	uint32_t i;
	int c;

	if (!rs_state_ready(st) || !rs_direction_ok(st->prog_flags, port))
		return -1;
	c = rs_pkt_parse(&p, frame, len, len, run_flags, st->form_flags & RS_FORM_L4);
	if (c < 0)
		return -1;
	i = rs_classify(st, &p, (uint32_t)c, port, len);
	return i < st->n_rules ? (int32_t)i : -1;
}

/* The pseudo-header's sum of a parsed frame with one (rs_has_pseudo_hdr): addresses, protocol, L4 length. */
static uint32_t rs_pseudo_hdr_sum(const struct rs_pkt *p)
{
	uint32_t l4len = p->l3_end - p->l4, alen = p->ipv == 4 ? 8 : 32;

	return rs_csum_span(p->b + p->l3 + (p->ipv == 4 ? 12 : 8), 0, alen) + p->proto + (l4len & 0xffff) +
	       (l4len >> 16);
}

/* The L4 span's sum, the checksum field counted as zero, on top of s. */
static uint32_t rs_l4_sum(const struct rs_pkt *p, uint32_t s)
{
	uint32_t i;

	for (i = p->l4; i < p->l3_end; i++)
		if (i != p->ck && i != p->ck + 1)
			s += (((i - p->l4) & 1) ? p->b[i] : (uint32_t)p->b[i] << 8);
	return s;
}

/* Parses frame for a checksum to compute; 0 when it has one (TCP, UDP or ICMPv6, whole, not a fragment). */
static int rs_csum_parse(struct rs_pkt *p, uint8_t *frame, uint32_t len, uint32_t run_flags)
{
	return rs_pkt_parse(p, frame, len, len, run_flags, RS_PKT_L4) < 0 || !p->l4hl || p->frag || !rs_has_pseudo_hdr(p);
}

/* Writes the checksum the frame's L4 bytes and pseudo-header sum ps give. */
static void rs_csum_write(struct rs_pkt *p, uint32_t ps)
{
	uint32_t s = ~rs_csum_fold(rs_csum_fold(rs_l4_sum(p, ps))) & 0xffff;

	if (s == 0 && p->proto == RS_IPPROTO_UDP)
		s = 0xffff;
	rs_put_be16(p->b + p->ck, s);
}

/*
 * The TCP/UDP/ICMPv6 checksum of a frame, computed from scratch. Carriers
 * call it on frames the kernel hands over with the checksum not yet done
 * (CHECKSUM_PARTIAL, TP_STATUS_CSUMNOTREADY): the field then holds only the
 * pseudo-header sum, and incremental updates would keep it wrong.
 */
int rs_csum_complete(uint8_t *frame, uint32_t len, uint32_t run_flags)
{
	struct rs_pkt p;

	if (rs_csum_parse(&p, frame, len, run_flags))
		return 0;
	rs_csum_write(&p, rs_pseudo_hdr_sum(&p));
	return 1;
}

/*
 * For carriers the kernel does not tell which frames are CHECKSUM_PARTIAL
 * (XDP: a veth peer's, a tap's): a checksum that does not add up but holds
 * exactly the pseudo-header sum, as the sending stack leaves it for the NIC,
 * is computed. Any other wrong checksum is the frame's own and stays.
 */
int rs_csum_complete_seeded(uint8_t *frame, uint32_t len, uint32_t run_flags)
{
	struct rs_pkt p;
	uint32_t ps, seed, field;

	if (rs_csum_parse(&p, frame, len, run_flags))
		return 0;
	ps = rs_pseudo_hdr_sum(&p);
	seed = rs_csum_fold(rs_csum_fold(ps));
	field = (uint32_t)p.b[p.ck] << 8 | p.b[p.ck + 1];
	/* 0 and 0xffff are one value in ones' complement */
	if (field != seed && !(field == 0 && seed == 0xffff) && !(field == 0xffff && seed == 0))
		return 0;
	if (rs_csum_fold(rs_csum_fold(rs_l4_sum(&p, ps) + field)) == 0xffff)
		return 0;	/* it adds up as it is */
	rs_csum_write(&p, ps);
	return 1;
}
