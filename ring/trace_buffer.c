// SPDX-License-Identifier: GPL-2.0 OR MIT
/*
 * Ring mode's trace buffer (`reshaper trace`, bridge/trace.py): while tracing
 * is on, the loop leaves a record of each frame the rules see (the first
 * RS_TRACE_HEAD bytes as it arrived, the rule, the verdict) in a ring of
 * RS_TRACE_SLOTS records, and the control thread takes them out. One
 * producer, one consumer; head and tail run free. A frame that finds the
 * ring full is only counted: the loop never waits for a reader.
 */
#include <stdlib.h>
#include <string.h>

#include "ring_internal.h"

int rs_trace_buffer_open(struct rs_forwarder *fw)
{
	fw->trace.rec = calloc(RS_TRACE_SLOTS, sizeof(*fw->trace.rec));
	return fw->trace.rec ? 0 : -1;
}

void rs_trace_buffer_close(struct rs_forwarder *fw)
{
	free(fw->trace.rec);
}

void rs_forwarder_set_trace(struct rs_forwarder *fw, int on, int32_t rule)
{
	fw->trace.rule = rule;
	__atomic_store_n(&fw->trace.on, on != 0, __ATOMIC_RELEASE);
}

void rs_trace_before(struct rs_forwarder *fw, const uint8_t *frame, uint32_t len)
{
	fw->trace.caplen = len < RS_TRACE_HEAD ? len : RS_TRACE_HEAD;
	memcpy(fw->trace.head_bytes, frame, fw->trace.caplen);
}

void rs_trace_after(struct rs_forwarder *fw, int port, uint64_t now, uint32_t len, const struct rs_verdict *v)
{
	struct rs_trace_buffer *t = &fw->trace;
	uint32_t tail = t->tail, head = __atomic_load_n(&t->head, __ATOMIC_ACQUIRE);
	struct rs_trace_record *r;

	if (t->rule >= 0 && v->rule != t->rule)
		return;
	if (tail - head >= RS_TRACE_SLOTS) {
		t->lost++;
		return;
	}
	r = &t->rec[tail % RS_TRACE_SLOTS];
	r->timestamp_ns = now;
	r->delay_ns = v->delay_ns;
	r->rule = v->rule;
	r->len = len;
	r->copies = (uint16_t)v->copies;
	r->port = (uint8_t)port;
	r->verdict = (uint8_t)v->verdict;
	r->reason = (uint8_t)v->reason;
	r->caplen = (uint8_t)t->caplen;
	memcpy(r->head, t->head_bytes, t->caplen);
	__atomic_store_n(&t->tail, tail + 1, __ATOMIC_RELEASE);
}

uint32_t rs_forwarder_trace_take(struct rs_forwarder *fw, struct rs_trace_record *out, uint32_t max)
{
	struct rs_trace_buffer *t = &fw->trace;
	uint32_t head = t->head, tail = __atomic_load_n(&t->tail, __ATOMIC_ACQUIRE), n = 0;

	while (head != tail && n < max)
		out[n++] = t->rec[head++ % RS_TRACE_SLOTS];
	__atomic_store_n(&t->head, head, __ATOMIC_RELEASE);
	return n;
}

uint64_t rs_forwarder_trace_lost(struct rs_forwarder *fw)
{
	return __atomic_load_n(&fw->trace.lost, __ATOMIC_RELAXED);
}
