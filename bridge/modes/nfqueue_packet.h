/* SPDX-License-Identifier: GPL-2.0 OR MIT */
/*
 * NFQUEUE mode's one C call per packet (bridge/modes/nfqueue.py, through
 * reshaper/_ffi_build.py): the payload copied into the frame buffer, its time
 * taken, the engine run over it in L3 mode, and what the queue's verdict must
 * be, in one crossing from Python instead of one per step.
 */
#ifndef RS_NFQUEUE_PACKET_H
#define RS_NFQUEUE_PACKET_H

#include <stdint.h>

#include "rs_program.h"

/* what rs_nfq_run() returns: RS_NFQ_TOO_LONG, or one of the codes below in its low two bits */
#define RS_NFQ_TOO_LONG  -1 /* over RS_MAX_FRAME: not run, the packet passes as it came */
#define RS_NFQ_ACCEPT     0 /* forward now, unchanged */
#define RS_NFQ_CHANGED    1 /* forward now as frame[0, len), len in the bits above RS_NFQ_CODE_BITS */
#define RS_NFQ_DROP       2
#define RS_NFQ_DELAYED    3 /* forward after v.delay_ns (changed if v.flags has RS_VF_MODIFIED) */
#define RS_NFQ_CODE_BITS  2
#define RS_NFQ_CODE_MASK  3

struct rs_nfq_packet {
	/* set by Python at each program load: the running program's state, which holds the program */
	void *state;
	uint8_t *frame;  /* RS_MAX_FRAME + RS_FRAME_ROOM bytes: the last packet, after the actions */
	/* the last packet's run */
	uint64_t now_ns; /* when it ran, CLOCK_MONOTONIC */
	struct rs_verdict v;
};

/* Runs payload (len bytes from the IP header on, arriving on port RS_PORT_A or RS_PORT_B)
 * through p's program at the time now; returns what its verdict is (RS_NFQ_*). */
int rs_nfq_run(struct rs_nfq_packet *p, const char *payload, uint32_t len, uint32_t port);

#endif /* RS_NFQUEUE_PACKET_H */
