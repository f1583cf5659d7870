// SPDX-License-Identifier: GPL-2.0 OR MIT
/*
 * Ring mode's delay queue: frames the rules delay wait in a pool of buffers
 * of one ring slot each, ordered by a binary heap on (departure, arrival
 * order), until the loop (forwarder.c) releases them when they are due. It
 * also counts, per rule of the running program, the frames it holds, and how
 * late each frame left.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "ring_internal.h"

/* The pool of frames buffers of fw->slot_size bytes, all free; 0 or -1 (out of memory). */
int rs_delay_pool_open(struct rs_forwarder *fw, uint32_t frames)
{
	uint32_t i;

	fw->pool_frames = frames;
	fw->pool = malloc((size_t)fw->pool_frames * fw->slot_size + 1);
	fw->free_slots = malloc(sizeof(uint32_t) * (fw->pool_frames + 1));
	fw->heap = malloc(sizeof(struct rs_qent) * (fw->pool_frames + 1));
	if (!fw->pool || !fw->free_slots || !fw->heap)
		return -1;
	for (i = 0; i < fw->pool_frames; i++)
		fw->free_slots[i] = fw->pool_frames - 1 - i;
	fw->nfree = fw->pool_frames;
	return 0;
}

void rs_delay_pool_close(struct rs_forwarder *fw)
{
	free(fw->pool);
	free(fw->free_slots);
	free(fw->heap);
}

int rs_forwarder_set_pool(struct rs_forwarder *fw, uint32_t frames)
{
	uint8_t *pool;
	uint32_t *free_slots;
	struct rs_qent *heap;
	uint32_t i;

	if (frames <= fw->pool_frames)
		return 0;	/* never shrinks: queued frames may sit in any slot */
	pool = realloc(fw->pool, (size_t)frames * fw->slot_size + 1);
	if (!pool)
		return -ENOMEM;
	fw->pool = pool;
	free_slots = realloc(fw->free_slots, sizeof(uint32_t) * (frames + 1));
	if (!free_slots)
		return -ENOMEM;
	fw->free_slots = free_slots;
	heap = realloc(fw->heap, sizeof(struct rs_qent) * (frames + 1));
	if (!heap)
		return -ENOMEM;
	fw->heap = heap;
	for (i = fw->pool_frames; i < frames; i++)
		fw->free_slots[fw->nfree++] = i;
	fw->pool_frames = frames;
	return 0;
}

void rs_forwarder_rule_held(struct rs_forwarder *fw, uint32_t *out, uint32_t n)
{
	uint32_t i;

	for (i = 0; i < n; i++)
		out[i] = i < RS_MAX_RULES ? fw->held[i] : 0;
}

/* the heap's order: departure, then arrival */
static int qent_before(const struct rs_qent *a, const struct rs_qent *b)
{
	return a->dep < b->dep || (a->dep == b->dep && a->seq < b->seq);
}

static void heap_push(struct rs_forwarder *fw, struct rs_qent e)
{
	uint32_t i = fw->nheap++;

	while (i && qent_before(&e, &fw->heap[(i - 1) / 2])) {
		fw->heap[i] = fw->heap[(i - 1) / 2];
		i = (i - 1) / 2;
	}
	fw->heap[i] = e;
}

static struct rs_qent heap_pop(struct rs_forwarder *fw)
{
	struct rs_qent top = fw->heap[0], last = fw->heap[--fw->nheap];
	uint32_t i = 0, c;

	while ((c = 2 * i + 1) < fw->nheap) {
		if (c + 1 < fw->nheap && qent_before(&fw->heap[c + 1], &fw->heap[c]))
			c++;
		if (!qent_before(&fw->heap[c], &last))
			break;
		fw->heap[i] = fw->heap[c];
		i = c;
	}
	fw->heap[i] = last;
	return top;
}

/* Holds a copy of frame f until dep (CLOCK_MONOTONIC); counted in pool_full when no buffer is free. */
void rs_delay_enqueue(struct rs_forwarder *fw, int out, const uint8_t *f, uint32_t len, uint32_t pcp,
		      uint32_t copies, uint64_t dep, int32_t rule)
{
	struct rs_qent e;

	if (!fw->nfree || len > fw->slot_size) {
		fw->st.pool_full++;
		return;
	}
	e.slot = fw->free_slots[--fw->nfree];
	memcpy(fw->pool + (size_t)e.slot * fw->slot_size, f, len);
	e.dep = dep;
	e.seq = fw->seq++;
	e.len = len;
	e.copies = (uint16_t)copies;
	e.port = (uint8_t)out;
	e.pcp = (uint8_t)pcp;
	e.rule = rule >= 0 && rule < RS_MAX_RULES ? (uint16_t)rule : UINT16_MAX;
	e.gen = fw->gen;
	if (e.rule != UINT16_MAX)
		fw->held[e.rule]++;
	heap_push(fw, e);
}

/* Sends every frame due at now (UINT64_MAX: all of them, on exit); returns how many. */
int rs_delay_release(struct rs_forwarder *fw, uint64_t now)
{
	int n = 0;

	static const uint64_t bound[7] = { 1000, 2000, 5000, 10000, 20000, 50000, 100000 };

	while (fw->nheap && fw->heap[0].dep <= now) {
		struct rs_qent e = heap_pop(fw);
		uint64_t late = now - e.dep;
		int k = 0;

		if (now != UINT64_MAX) {
			while (k < 7 && late >= bound[k])
				k++;
			fw->st.late_hist[k]++;
			fw->st.late_sum_ns += late;
			if (late > fw->st.late_max_ns)
				fw->st.late_max_ns = late;
		}

		rs_emit(fw, e.port, fw->pool + (size_t)e.slot * fw->slot_size, e.len, e.pcp, e.copies);
		fw->free_slots[fw->nfree++] = e.slot;
		if (e.gen == fw->gen && e.rule != UINT16_MAX && fw->held[e.rule])
			fw->held[e.rule]--;
		n++;
	}
	return n;
}
