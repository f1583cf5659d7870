/* SPDX-License-Identifier: GPL-2.0 OR MIT */
/*
 * reshaper generic netlink family: what user space sends and reads.
 * User space reads every number and the port-stats layout from this file
 * (reshaper/_ffi_build.py puts it in the native extension; bridge/kernel_genl.py).
 */
#ifndef RESHAPER_GENL_H
#define RESHAPER_GENL_H

#include <linux/types.h>

#define RESHAPER_GENL_NAME	"reshaper"
/* 2: GET_STATS is a dump (1 answered it with one reply, NLM_F_DUMP unset) */
#define RESHAPER_GENL_VERSION	2
/* the longest program LOAD can carry: it goes in one attribute, whose 16-bit
 * length counts the attribute's own 4-byte header (struct nlattr) */
#define RESHAPER_MAX_PROGRAM_LEN	(0xffff - 4)

enum {
	RESHAPER_CMD_UNSPEC,
	RESHAPER_CMD_LOAD,	/* PROGRAM, PORT_A, PORT_B, [SEED]: verify, then replace */
	RESHAPER_CMD_CLEAR,	/* remove the program; queued frames leave at once */
	RESHAPER_CMD_GET_STATS,	/* a dump (NLM_F_DUMP), see below */
	__RESHAPER_CMD_MAX,
};

/*
 * GET_STATS must be asked with NLM_F_REQUEST | NLM_F_DUMP. The first message carries
 * QUEUED and QUEUE_DROPS and, if a program is loaded, PROGRAM_LEN, PORT_STATS and a STATE
 * piece; each next message one more STATE piece, until NLMSG_DONE. The pieces, joined in
 * the order they came, are the state (struct rs_state + n_rules struct rs_rule_state);
 * each holds whole struct rs_rule_states (the first also struct rs_state), their number
 * set by the size of the message the kernel had room for.
 * Consistency: the counters within one message are one snapshot; a later message's are
 * later, so counters of different messages may differ by the frames counted in between.
 * If a LOAD or CLEAR replaces the program during a dump, the dump ends with EAGAIN
 * (NLMSG_DONE, with an extended-ack message): the messages received belong to two
 * programs and must be thrown away; ask again.
 */
#define RESHAPER_CMD_MAX (__RESHAPER_CMD_MAX - 1)

enum {
	RESHAPER_A_UNSPEC,
	RESHAPER_A_PROGRAM,	/* binary: the compiled program (PROGRAM.md) */
	RESHAPER_A_PORT_A,	/* string: interface of port a (a bridge port) */
	RESHAPER_A_PORT_B,	/* string: interface of port b */
	RESHAPER_A_SEED,	/* u64: PRNG seed */
	RESHAPER_A_PROGRAM_LEN,	/* u32: length of the loaded program (absent: none) */
	RESHAPER_A_STATE,	/* binary, one a message: a piece of the state (GET_STATS) */
	RESHAPER_A_PORT_STATS,	/* binary: struct reshaper_port_stats[2], a then b */
	RESHAPER_A_QUEUED,	/* u32: frames waiting in the delay queue */
	RESHAPER_A_QUEUE_DROPS,	/* u64: frames refused by a full delay queue */
	RESHAPER_A_PAD,
	__RESHAPER_A_MAX,
};
#define RESHAPER_A_MAX (__RESHAPER_A_MAX - 1)

/* per port, native byte order */
struct reshaper_port_stats {
	__u64 rx;		/* frames from this port the engine ran on */
	__u64 tx;		/* frames sent to this port (copies included) */
	__u64 dropped;		/* frames from this port the engine dropped */
	__u64 delayed;		/* frames to this port that went through the delay queue */
	__u64 csum_completed;	/* CHECKSUM_PARTIAL frames completed before the engine */
	__u64 oversize;		/* GSO frames that could not be segmented (dropped) */
	__u64 errors;		/* frames dropped: no memory to make them writable */
};

#endif /* RESHAPER_GENL_H */
