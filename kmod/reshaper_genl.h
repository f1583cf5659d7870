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
#define RESHAPER_GENL_VERSION	1
/* the longest program LOAD can carry: it goes in one attribute, whose 16-bit
 * length counts the attribute's own 4-byte header (struct nlattr) */
#define RESHAPER_MAX_PROGRAM_LEN	(0xffff - 4)
/* GET_STATS sends the state in pieces of at most this many bytes, for the same reason */
#define RESHAPER_STATE_PIECE		0xf000

enum {
	RESHAPER_CMD_UNSPEC,
	RESHAPER_CMD_LOAD,	/* PROGRAM, PORT_A, PORT_B, [SEED]: verify, then replace */
	RESHAPER_CMD_CLEAR,	/* remove the program; queued frames leave at once */
	RESHAPER_CMD_GET_STATS,	/* reply: PROGRAM_LEN, STATE, PORT_STATS, QUEUED, QUEUE_DROPS */
	__RESHAPER_CMD_MAX,
};
#define RESHAPER_CMD_MAX (__RESHAPER_CMD_MAX - 1)

enum {
	RESHAPER_A_UNSPEC,
	RESHAPER_A_PROGRAM,	/* binary: the compiled program (PROGRAM.md) */
	RESHAPER_A_PORT_A,	/* string: interface of port a (a bridge port) */
	RESHAPER_A_PORT_B,	/* string: interface of port b */
	RESHAPER_A_SEED,	/* u64: PRNG seed */
	RESHAPER_A_PROGRAM_LEN,	/* u32: length of the loaded program (absent: none) */
	RESHAPER_A_STATE,	/* binary, repeated: pieces that joined in order are
				 * struct rs_state + n_rules struct rs_rule_state */
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
