/* SPDX-License-Identifier: GPL-2.0 */
/*
 * The module's tracepoint, reshaper:reshaper_frame: one event per frame the
 * engine ran on, fired by rs_frame.c, defined once in rs_trace.c. `reshaper
 * trace` reads it from a tracefs instance of its own (bridge/kernel_trace.py);
 * perf and bpftrace see it too. Disabled, it costs its static key (the head
 * is copied only while it is enabled).
 *
 * netns: the inode of the frame's network namespace (a reader filters to its
 * own); port: RS_PORT_A or RS_PORT_B; rule, verdict, reason, copies, delay_ns:
 * the engine's verdict (struct rs_verdict, rs_program.h); len and head: the
 * frame as the engine got it, before its actions rewrote it in place (its
 * first caplen bytes, at most RS_TRACE_HEAD, rs_program.h).
 */
#undef TRACE_SYSTEM
#define TRACE_SYSTEM reshaper

#if !defined(RS_TRACE_H) || defined(TRACE_HEADER_MULTI_READ)
#define RS_TRACE_H

#include <linux/tracepoint.h>
#include <net/net_namespace.h>

#include "rs_program.h"		/* struct rs_verdict, RS_TRACE_HEAD */

TRACE_EVENT(reshaper_frame,

	TP_PROTO(const struct net *net, int port, const struct rs_verdict *v,
		 u32 len, const u8 *frame, u16 caplen),	/* not "head": perf.h's local */

	TP_ARGS(net, port, v, len, frame, caplen),

	/* largest first: no holes */
	TP_STRUCT__entry(
		__field(u64, delay_ns)
		__field(u32, netns)
		__field(u32, len)
		__field(s32, rule)
		__field(u16, copies)
		__field(u16, caplen)
		__field(u8, port)
		__field(u8, verdict)
		__field(u8, reason)
		__array(u8, head, RS_TRACE_HEAD)
	),

	TP_fast_assign(
		__entry->delay_ns = v->delay_ns;
		__entry->netns = net->ns.inum;
		__entry->len = len;
		__entry->rule = v->rule;
		__entry->copies = v->copies;
		__entry->caplen = caplen;
		__entry->port = port;
		__entry->verdict = v->verdict;
		__entry->reason = v->reason;
		memcpy(__entry->head, frame, caplen);
		/* the ring buffer is read by user space: nothing of the stack past the head */
		memset(__entry->head + caplen, 0, RS_TRACE_HEAD - caplen);
	),

	TP_printk("netns=%u port=%u rule=%d verdict=%u reason=%u copies=%u len=%u delay_ns=%llu head=%s",
		  __entry->netns, __entry->port, __entry->rule, __entry->verdict,
		  __entry->reason, __entry->copies, __entry->len, __entry->delay_ns,
		  __print_hex_str(__entry->head, __entry->caplen))
);

#endif /* RS_TRACE_H */

/* out of the kernel's tree: define_trace.h finds this file through -I$(src) (Kbuild) */
#undef TRACE_INCLUDE_PATH
#define TRACE_INCLUDE_PATH .
#undef TRACE_INCLUDE_FILE
#define TRACE_INCLUDE_FILE rs_trace
#include <trace/define_trace.h>
