// SPDX-License-Identifier: GPL-2.0 OR MIT
/*
 * libFuzzer harness for engine.c: the verifier against anything, and rs_run()
 * (the loaded form's classifier) against rs_run_reference() (every rule in
 * turn): the same verdicts, frame bytes, counters and timing state, or abort;
 * rs_rule_for() names the rule rs_run() applies; rs_run_traced() (`reshaper
 * explain`) does what rs_run_reference() does, into a trace of little room.
 *
 * Input, two kinds:
 *   [u16 LE program length > 0][program][u8 port][frame bytes]
 *   [u16 0][u8 port][u8 n][n bytes that make a program (with one delivery trace)][frame bytes]
 * port byte: bits 0-1 the port passed to rs_run (0..3, so invalid ports
 * are exercised too), bit 2 RS_RUN_L3. The second kind builds programs from
 * a small vocabulary of fields and values (the addresses and ports of
 * tests/fuzz_seeds.py's frames), so that rules share subtables and keys and
 * most programs verify: random bytes alone rarely make one.
 *
 * Build and run: make fuzz (Makefile), or
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined \
 *         -fno-sanitize-recover=undefined fuzz_engine.c engine.c \
 *         -o /tmp/fuzz_engine
 *   /tmp/fuzz_engine -max_total_time=60 CORPUS_DIR
 *
 * The frame lives in a heap buffer of exactly len + 4 bytes, passed as cap,
 * so AddressSanitizer catches any access past cap; the state buffer has
 * exactly the size the verifier asked for.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "rs_program.h"

#define RUNS 4
#define MAX_BUILT 4096

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* ---- programs from a vocabulary ---- */

struct builder {
	uint8_t *b;
	uint32_t len;
	const uint8_t *in;
	uint32_t n, at;
	uint32_t no_l4;		/* a program that reads nothing past the IP header (RS_FORM_L4 off) */
};

static uint32_t next(struct builder *g)
{
	return g->at < g->n ? g->in[g->at++] : 0;
}

static void put(struct builder *g, const void *p, uint32_t n)
{
	if (g->len + n <= MAX_BUILT)
		memcpy(g->b + g->len, p, n);
	g->len += n;
}

static void op(struct builder *g, uint32_t code, const uint8_t *o, uint32_t n)
{
	uint8_t h[2] = { (uint8_t)code, (uint8_t)n };

	put(g, h, 2);
	put(g, o, n);
}

/* values the seed frames carry, and a few they do not */
static const uint16_t values[] = { 0x0800, 0x86dd, 0x0806, 6, 17, 1, 58, 53, 80, 4000, 23, 0, 7, 3, 64, 1 };
static const uint8_t v4[][4] = { {10, 0, 0, 1}, {10, 0, 1, 1}, {10, 0, 0, 0}, {192, 0, 2, 1} };
static const uint8_t v4_masks[][4] = { {255, 255, 255, 255}, {255, 255, 255, 0}, {255, 0, 0, 0}, {0, 0, 0, 0} };
static const uint8_t macs[][6] = { {2, 0, 0, 0, 0, 1}, {2, 0, 0, 0, 0, 2} };

static void match_op(struct builder *g)
{
	uint32_t c = next(g), x = next(g), i;
	uint8_t o[40];

	memset(o, 0, sizeof(o));
	if (g->no_l4 && ((c % 8 <= 2 && (1 + c / 8 % RS_F_LENGTH == RS_F_SRC_PORT ||
					  1 + c / 8 % RS_F_LENGTH == RS_F_DST_PORT)) ||
			 (c % 8 == 3 && !(c & 8))))
		c = 5;	/* ports and TCP flags would need the L4 header: an address instead */
	switch (c % 8) {
	case 0:		/* one value of a field */
	case 1:
		o[0] = (uint8_t)(1 + c / 8 % RS_F_LENGTH);
		o[1] = 1;
		o[2] = o[4] = (uint8_t)values[x % 16];
		o[3] = o[5] = (uint8_t)(values[x % 16] >> 8);
		op(g, RS_M_RANGE, o, 6);
		break;
	case 2:		/* two ranges */
		o[0] = (uint8_t)(1 + c / 8 % RS_F_LENGTH);
		o[1] = 2;
		o[2] = (uint8_t)(x & 0x3f);
		o[4] = (uint8_t)(x & 0x3f) + (uint8_t)(c >> 4);
		o[6] = 0x50;
		o[8] = 0x60;
		o[9] = 0x0fa0 >> 8;
		op(g, RS_M_RANGE, o, 10);
		break;
	case 3:
		if (c & 8) {
			op(g, RS_M_HAS_VLAN, o, 0);
		} else {
			o[0] = (uint8_t)x;
			o[1] = (uint8_t)(x & (c >> 4 ? 0x12 : 0xff));
			op(g, RS_M_TCP_FLAGS, o, 2);
		}
		break;
	case 4:
		o[0] = (c >> 3) & 1;
		memcpy(o + 1, macs[x & 1], 6);
		memset(o + 7, 0xff, 6);
		if (x & 2)
			o[12] = o[11] = 0;
		if (x & 4)	/* a partial mask, or none, on the first four bytes */
			o[7] = o[8] = o[9] = 0, o[10] = (uint8_t)(x & 0xf0);
		op(g, RS_M_ETH, o, 13);
		break;
	case 5:
	case 6:
		o[0] = (c >> 3) & 1;
		o[1] = RS_FAMILY_IPV4;
		memcpy(o + 2, v4[x % 4], 4);
		memcpy(o + 6, v4_masks[x / 4 % 4], 4);
		op(g, RS_M_IP, o, 10);
		break;
	default:
		if (c & 8) {	/* IPv6 2001:db8::1/2 under a prefix of 0..128 */
			o[0] = (c >> 4) & 1;
			o[1] = RS_FAMILY_IPV6;
			o[2] = 0x20, o[3] = 0x01, o[4] = 0x0d, o[5] = 0xb8, o[17] = (uint8_t)(1 + (x & 1));
			for (i = 0; i < (x >> 1) % 129; i++)
				o[18 + i / 8] |= (uint8_t)(0x80 >> (i % 8));
			op(g, RS_M_IP, o, 34);
		} else {	/* bytes */
			o[0] = (uint8_t)(x % 3);
			o[1] = (uint8_t)(c >> 4);
			o[3] = 2;
			o[4] = (uint8_t)values[x % 16];
			o[6] = o[7] = 0xff;
			op(g, RS_M_BYTES, o, 8);
		}
	}
}

static void action_op(struct builder *g)
{
	uint32_t c = next(g), x = next(g);
	uint8_t o[24];

	memset(o, 0, sizeof(o));
	if (g->no_l4)	/* drop, timing, loss, copies: nothing that rewrites */
		c = (uint8_t[]){ 0, 3, 4, 5, 11 }[c % 5] + 12 * (c / 12);
	switch (c % 12) {
	case 0:
		op(g, RS_A_DROP, o, 0);
		break;
	case 1:		/* a header field, within its width */
		o[0] = (uint8_t[]){ RS_F_DSCP, RS_F_ECN, RS_F_TTL, RS_F_SRC_PORT, RS_F_DST_PORT,
				    RS_F_VLAN, RS_F_VLAN_PCP }[(c >> 4) % 7];
		o[1] = (uint8_t)(x & (o[0] == RS_F_ECN ? 3 : o[0] == RS_F_VLAN_PCP ? 7 : 63));
		o[2] = (uint8_t)(o[0] == RS_F_SRC_PORT || o[0] == RS_F_DST_PORT ? c : 0);
		op(g, RS_A_SET_FIELD, o, 3);
		break;
	case 2:
		op(g, RS_A_DEC_TTL, o, 0);
		break;
	case 3:		/* delay 1 ms + jitter, normal; now and then after a reorder of ~c/256, gap 0 to 2 */
		if (c & 0x80) {
			o[3] = (uint8_t)c;
			o[4] = (uint8_t)(x % 3);
			op(g, RS_A_REORDER, o, 8);
			memset(o, 0, sizeof(o));
		}
		o[2] = 0x0f, o[1] = 0x42, o[0] = 0x40;
		o[9] = (uint8_t)c;
		o[16] = RS_DIST_NORMAL;
		op(g, RS_A_DELAY, o, 21);
		break;
	case 4:		/* loss of ~c/256 */
		o[3] = (uint8_t)c;
		op(g, RS_A_LOSS, o, 8);
		break;
	case 5:		/* rate 1 Mbit/s, or the program's delivery trace; a queue of 3 */
		if (c & 0x80) {
			o[2] = (uint8_t)(c >> 4) & 3;	/* overhead: 0 .. 3 */
			o[4] = 3;
			op(g, RS_A_RATE_TRACE, o, 6);
			break;
		}
		o[2] = 0x0f, o[1] = 0x42, o[0] = 0x40;
		o[10] = 3;
		op(g, RS_A_RATE, o, 12);
		break;
	case 6:		/* an IPv4 address */
		o[0] = (c >> 4) & 1;
		o[1] = RS_FAMILY_IPV4;
		memcpy(o + 2, v4[x % 4], 4);
		o[5] ^= (uint8_t)(x >> 2);
		op(g, RS_A_SET_IP, o, 6);
		break;
	case 7:		/* an IPv6 address */
		o[0] = (c >> 4) & 1;
		o[1] = RS_FAMILY_IPV6;
		o[2] = 0x20, o[3] = 0x01, o[4] = 0x0d, o[5] = 0xb8, o[17] = (uint8_t)x;
		op(g, RS_A_SET_IP, o, 18);
		break;
	case 8:		/* bytes at an odd or even offset of a base */
		o[0] = (uint8_t)(x % 3);
		o[1] = (uint8_t)(c >> 4);
		o[3] = 3;
		o[4] = (uint8_t)x, o[5] = (uint8_t)c, o[6] = 0x5a;
		o[7] = 0xff, o[8] = 0x0f, o[9] = (uint8_t)(x | 1);
		op(g, RS_A_PAYLOAD, o, 10);
		break;
	case 9:
		if (c & 16) {
			o[0] = 0x00, o[1] = 0x81, o[2] = (uint8_t)x;
			op(g, RS_A_PUSH_VLAN, o, 4);
		} else {
			op(g, RS_A_POP_VLAN, o, 0);
		}
		break;
	case 10:	/* cut somewhere in the headers or the payload */
		o[0] = (uint8_t)(14 + x % 80);
		op(g, RS_A_TRUNCATE, o, 2);
		break;
	default:	/* one more copy now and then */
		o[0] = 1;
		o[4] = (uint8_t)c;
		op(g, RS_A_DUPLICATE, o, 5);
	}
}

/* Phases after the rule at start: two, 1 to 8 ms each (the runs' times cross them), the first
 * with up to two action ops, the second the rule's own; repeating when c says so. */
static void schedule(struct builder *g, uint32_t start, uint32_t c)
{
	uint8_t ph[RS_PHASE_HDR_LEN] = { 0 };
	uint32_t k, at, n = next(g) % 3;
	uint64_t ns;

	if (g->len > MAX_BUILT - 2 * RS_PHASE_HDR_LEN)
		return;
	g->b[start + 3] |= RS_RF_SCHEDULE | ((c & 0x80) ? RS_RF_REPEAT : 0);
	g->b[start + 6] = 2;
	ns = 1000000ull * (1 + next(g) % 8);
	memcpy(ph, &ns, 8);	/* little-endian, as the harness's machines are */
	ph[8] = (uint8_t)n;
	at = g->len;
	put(g, ph, sizeof(ph));
	for (k = 0; k < n; k++)
		action_op(g);
	if (g->len <= MAX_BUILT) {
		g->b[at + 10] = (uint8_t)(g->len - at);
		g->b[at + 11] = (uint8_t)((g->len - at) >> 8);
	}
	ph[8] = 0;
	ph[9] = RS_PHF_OWN;
	ph[10] = RS_PHASE_HDR_LEN;
	put(g, ph, sizeof(ph));
}

/* A program of up to 64 rules from g's bytes; its length, or 0 when too long. */
static uint32_t build_program(struct builder *g, uint8_t *out)
{
	uint32_t nrules = 0, k, start, c, flags = RS_PF_FWD_A_TO_B | RS_PF_FWD_B_TO_A;
	uint8_t hdr[16] = { 0 };

	g->b = out;
	g->len = RS_HDR_LEN;
	c = next(g);
	flags |= (c & 3) ? 0 : RS_PF_DEFAULT_DROP | RS_PF_MALFORMED_DROP;
	g->no_l4 = (c & 12) == 0;
	while (g->at < g->n && nrules < 64) {
		uint8_t rh[8] = { 0 };
		uint32_t nm, na;

		c = next(g);
		nm = (c >> 2) % 4;
		na = (c >> 4) % 3;
		rh[2] = (uint8_t)(c % 3);
		rh[4] = (uint8_t)nm;
		rh[5] = (uint8_t)na;
		start = g->len;
		put(g, rh, 8);
		for (k = 0; k < nm; k++)
			match_op(g);
		for (k = 0; k < na; k++)
			action_op(g);
		if (c & 0x40)
			schedule(g, start, c);
		if (g->len > MAX_BUILT)
			return 0;
		out[start] = (uint8_t)(g->len - start);
		out[start + 1] = (uint8_t)((g->len - start) >> 8);
		nrules++;
	}
	/* one delivery trace for RS_A_RATE_TRACE: opportunities 0, 1 or 2 ms apart, a period of 1 to 8 ms
	 * (the runs' times cross several) */
	{
		uint8_t t[RS_TRACE_HDR_LEN + 8] = { sizeof(t), 0, 0, 0, 0, 0, 0, 0, 4 };
		uint32_t k, ms = 0;

		c = next(g);
		for (k = 0; k < 4; k++) {
			t[RS_TRACE_HDR_LEN + 2 * k] = (uint8_t)((c >> (2 * k)) % 3);
			ms += t[RS_TRACE_HDR_LEN + 2 * k];
		}
		if (!ms)
			t[RS_TRACE_HDR_LEN + 6] = 1, ms = 1;
		t[4] = (uint8_t)ms;
		put(g, t, sizeof(t));
		if (g->len > MAX_BUILT)
			return 0;
	}
	hdr[10] = 1;
	hdr[0] = RS_MAGIC & 0xff, hdr[1] = (RS_MAGIC >> 8) & 0xff;
	hdr[2] = (RS_MAGIC >> 16) & 0xff, hdr[3] = RS_MAGIC >> 24;
	hdr[4] = RS_VERSION;
	hdr[6] = (uint8_t)flags;
	hdr[8] = (uint8_t)nrules;
	hdr[12] = (uint8_t)g->len, hdr[13] = (uint8_t)(g->len >> 8);
	memcpy(out, hdr, sizeof(hdr));
	return g->len;
}

/* ---- both engines on the same frames ---- */

static void run_both(const uint8_t *prog, uint32_t plen, uint32_t state_size, uint32_t port,
		     const uint8_t *frame_in, uint32_t flen)
{
	void *fast = malloc(state_size), *ref = malloc(state_size), *traced = malloc(state_size);
	uint8_t *frame = malloc((size_t)flen + 4), *again = malloc((size_t)flen + 4);
	uint8_t *third = malloc((size_t)flen + 4), *copies = malloc(2 * ((size_t)flen + 4));
	/* room for a few events and two copies of the frame: a trace that runs out is cut, nothing more */
	struct rs_trace_event events[3];
	struct rs_trace trace = { events, 3, 0, copies, flen + 4, 2 };
	uint32_t i, before_form;

	if (!fast || !ref || !traced || !frame || !again || !third || !copies)
		goto out;
	rs_state_init(prog, plen, fast, state_size, 42);
	rs_state_init(prog, plen, ref, state_size, 42);
	rs_state_init(prog, plen, traced, state_size, 42);
	/* counters, PRNG, rule states and rate queues come before the loaded form */
	before_form = ((struct rs_state *)fast)->form;
	if (!before_form || before_form > state_size)
		abort();

	for (i = 0; i < RUNS; i++) {
		struct rs_verdict v, w, x;

		int32_t rule;

		memcpy(frame, frame_in, flen);
		memcpy(again, frame_in, flen);
		memcpy(third, frame_in, flen);
		rule = rs_rule_for(fast, frame, flen, port & 3, (port >> 2) & RS_RUN_L3);
		if (memcmp(frame, again, flen))
			abort();	/* it changes nothing */
		rs_run(fast, frame, flen, flen + 4, port & 3, (port >> 2) & RS_RUN_L3, 1000000ull * i * i, &v);
		rs_run_reference(ref, again, flen, flen + 4, port & 3, (port >> 2) & RS_RUN_L3,
				 1000000ull * i * i, &w);
		if (v.len > flen + 4 || v.verdict > RS_V_DROP || v.rule != rule)
			abort();
		if (memcmp(&v, &w, sizeof(v)) || memcmp(frame, again, v.len) ||
		    memcmp(fast, ref, before_form))
			abort();
		rs_run_traced(traced, third, flen, flen + 4, port & 3, (port >> 2) & RS_RUN_L3, 1000000ull * i * i,
			      &x, &trace);
		if (memcmp(&x, &w, sizeof(x)) || memcmp(third, again, x.len) || memcmp(traced, ref, state_size))
			abort();
	}
	/* what carriers run before the rules, on what the rules left */
	rs_csum_complete_seeded(frame, flen, (port >> 2) & RS_RUN_L3);
	rs_csum_complete(frame, flen, (port >> 2) & RS_RUN_L3);
out:
	free(copies);
	free(third);
	free(again);
	free(frame);
	free(traced);
	free(ref);
	free(fast);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	uint32_t plen, flen, state_size = 0, port, skip;
	uint8_t *prog;

	/* the verifier must survive anything */
	rs_program_verify(data, (uint32_t)(size > 0xffffffffu ? 0 : size),
			  &state_size);

	if (size < 4)
		return 0;
	plen = data[0] | (uint32_t)data[1] << 8;
	if (plen) {
		if (size < 2 + (size_t)plen + 1)
			return 0;
		/* exact-size copy: reads past the program's end trip ASan */
		prog = malloc(plen);
		if (!prog)
			return 0;
		memcpy(prog, data + 2, plen);
		port = data[2 + plen];
		skip = 3 + plen;
	} else {
		struct builder g = { 0 };
		uint8_t built[MAX_BUILT];

		port = data[2];
		g.in = data + 4;
		g.n = data[3];
		if (size < 4 + (size_t)g.n)
			return 0;
		plen = build_program(&g, built);
		prog = malloc(plen ? plen : 1);
		if (!prog)
			return 0;
		memcpy(prog, built, plen);
		skip = 4 + g.n;
	}
	if (!plen || rs_program_verify(prog, plen, &state_size)) {
		free(prog);
		return 0;
	}
	flen = (uint32_t)(size - skip);
	if (flen > RS_MAX_FRAME + 8)
		flen = RS_MAX_FRAME + 8;
	run_both(prog, plen, state_size, port, data + skip, flen);
	free(prog);
	return 0;
}
