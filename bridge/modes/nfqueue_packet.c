// SPDX-License-Identifier: GPL-2.0 OR MIT
/*
 * NFQUEUE mode's per-packet call (nfqueue_packet.h): what Python did in
 * several cffi crossings (copy in, clock, rs_run, reading the verdict's
 * fields) in one.
 */
#include <string.h>
#include <time.h>

#include "nfqueue_packet.h"

int rs_nfq_run(struct rs_nfq_packet *p, const char *payload, uint32_t len, uint32_t port)
{
	struct timespec ts;

	if (len > RS_MAX_FRAME)
		return RS_NFQ_TOO_LONG;
	memcpy(p->frame, payload, len);
	/* the clock of time.monotonic_ns(), which releases held packets (nfqueue.py) */
	clock_gettime(CLOCK_MONOTONIC, &ts);
	p->now_ns = (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
	rs_run(p->state, p->frame, len, len + RS_FRAME_ROOM, port, RS_RUN_L3, p->now_ns, &p->v);
	if (p->v.verdict != RS_V_FORWARD)
		return RS_NFQ_DROP;
	if (p->v.delay_ns)
		return RS_NFQ_DELAYED;
	if (p->v.flags & RS_VF_MODIFIED)
		return (int)(p->v.len << RS_NFQ_CODE_BITS) | RS_NFQ_CHANGED;
	return RS_NFQ_ACCEPT;
}
