/* SPDX-License-Identifier: GPL-2.0 OR MIT */
/*
 * Dropping capabilities: once a mode has opened its sockets, only undoing its
 * set-up at exit needs a privilege (CAP_NET_ADMIN). Python sees this header
 * through reshaper/_ffi_build.py (bridge/privileges.py).
 */
#ifndef RS_PRIVILEGES_H
#define RS_PRIVILEGES_H

#include <stdint.h>
#include <linux/capability.h>

#define RS_CAP_NET_ADMIN CAP_NET_ADMIN  /* the capability number, for Python */
/* what `reshaper run --realtime` needs (bridge/realtime.py) */
#define RS_CAP_SYS_NICE CAP_SYS_NICE   /* SCHED_FIFO above RLIMIT_RTPRIO */
#define RS_CAP_IPC_LOCK CAP_IPC_LOCK   /* locking memory beyond RLIMIT_MEMLOCK */

/* Keeps only the capabilities whose bits (1 << CAP_*) are set in keep; returns 0 or -errno. */
int rs_drop_capabilities(uint64_t keep);

#endif /* RS_PRIVILEGES_H */
