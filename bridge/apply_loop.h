/* SPDX-License-Identifier: GPL-2.0 OR MIT */
/*
 * `reshaper apply`'s loop in C (bridge/apply_native.py, through
 * reshaper/_ffi_build.py): a capture's records through the engine, the
 * departure-ordered queue and the output's records, with Python only at the
 * ends. Per frame in Python (reader, cffi call, heap operation, writer) this
 * was seven times tcprewrite's time on the same capture (docs/benchmarks/engine.md).
 *
 * The reader here takes only the plain records: pcap records, and pcapng
 * enhanced and simple packet blocks from a known Ethernet interface, every
 * length right. At anything else it stops, and Python's reader
 * (bridge/captures.py) takes that record, with every check and error text it
 * has; the frames it reads come back here through rs_apply_frame().
 */
#ifndef RS_APPLY_LOOP_H
#define RS_APPLY_LOOP_H

#include <stddef.h>
#include <stdint.h>

#include "rs_program.h"

/* pcapng block types this reader takes (the pcapng spec; bridge/captures.py names them from here) */
#define RS_PCAPNG_SPB 3 /* simple packet block */
#define RS_PCAPNG_EPB 6 /* enhanced packet block */

/* what the calls return */
#define RS_APPLY_OK          0
#define RS_APPLY_UNWRITABLE  1 /* a departure the output cannot hold: a->unwritable_* (Python's writer says why) */
#define RS_APPLY_NOMEM       2
#define RS_APPLY_IO          3 /* writing the output failed: a->io_errno */

/* drop counts by the engine's RS_R_* reason; bridge/apply_native.py checks every reason is below */
#define RS_APPLY_REASONS 32

/* one pcapng interface, as Python's reader described it */
struct rs_apply_iface {
	uint32_t ethernet;    /* its link type is Ethernet */
	uint32_t snaplen;     /* 0: none */
	uint64_t ns_per_tick; /* its if_tsresol in whole ns; 0 when finer or not dividing a second: Python's */
	int64_t offset_s;     /* if_tsoffset */
};

/* how the records from a point of the input are laid out, from Python's reader */
struct rs_apply_input {
	uint32_t pcapng;
	uint32_t big_endian;
	uint32_t unit_ns;      /* pcap: what a timestamp's fraction counts */
	uint32_t snaplen;      /* pcap: the file header's, 0 for none */
	uint32_t n_ifaces;     /* pcapng: the section's interfaces so far */
	const struct rs_apply_iface *ifaces;
	uint64_t last_ns;      /* pcapng: the last packet's time, a simple packet block's */
	/* what rs_apply_records() took */
	size_t taken;          /* bytes */
	uint64_t records;
};

struct rs_apply_queue; /* the departures waiting, in apply_loop.c */

struct rs_apply {
	/* set by Python: the engine's state, which holds its program (rules/binding.py's Engine), the
	 * ports, the output */
	void *state;
	uint32_t port;         /* RS_PORT_A or RS_PORT_B: where the frames arrive */
	int32_t in_vlan;       /* the ports' VLANs in trunk form, -1 for none */
	int32_t out_vlan;
	int fd;                /* the output, its file header written */
	uint32_t pcapng;       /* else nanosecond pcap */
	uint32_t snaplen;      /* pcap output: its file header's */
	/* counts */
	uint64_t frames_in;
	uint64_t not_on_port;
	uint64_t frames_out;
	uint64_t dropped[RS_APPLY_REASONS];
	/* RS_APPLY_UNWRITABLE: the departure (unwritable_over: past 2^64 ns, by that much) and its frame */
	uint64_t unwritable_ns;
	uint32_t unwritable_over;
	uint32_t unwritable_len;
	const uint8_t *unwritable_frame;
	int io_errno;
	struct rs_apply_queue *queue;
};

/* Allocates a's queue, output buffer and frame buffer; RS_APPLY_OK or RS_APPLY_NOMEM. */
int rs_apply_open(struct rs_apply *a);

/* One frame of len bytes arriving at now_ns (a frame Python's reader read). */
int rs_apply_frame(struct rs_apply *a, uint64_t now_ns, const uint8_t *data, uint32_t len);

/* Runs the records of buf[0, len) laid out as in says, up to the first one it leaves to Python's reader
 * or the end of what buf holds whole; in->taken, in->records and in->last_ns say how far it came. */
int rs_apply_records(struct rs_apply *a, struct rs_apply_input *in, const uint8_t *buf, size_t len);

/* Writes every frame still waiting, in departure order, and what the output buffer holds. */
int rs_apply_finish(struct rs_apply *a);

/* Frees what rs_apply_open() allocated and the frames still waiting. */
void rs_apply_close(struct rs_apply *a);

#endif /* RS_APPLY_LOOP_H */
