// SPDX-License-Identifier: GPL-2.0 OR MIT
/*
 * XDP mode's program: every frame a port's interface receives goes to the
 * forwarder's AF_XDP socket (ring/xsk.c), before the kernel allocates a
 * socket buffer for it. The socket sits in rs_xsks at its receive queue's
 * index; a queue without one (none yet, or the forwarder gone) passes the
 * frame on to the kernel, as if the program were not there.
 *
 * BPF objects are the same on every architecture: reshaper/_ffi_build.py
 * compiles this once with clang and embeds it in the extension, so the
 * board needs no compiler.
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#include "../xsk_abi.h"

struct {
	__uint(type, BPF_MAP_TYPE_XSKMAP);
	__uint(max_entries, RS_XSK_MAX_QUEUES);
	__type(key, __u32);
	__type(value, __u32);
} rs_xsks SEC(".maps");

SEC("xdp")
int reshaper_xsk(struct xdp_md *ctx)
{
	return bpf_redirect_map(&rs_xsks, ctx->rx_queue_index, XDP_PASS);
}

char LICENSE[] SEC("license") = "Dual MIT/GPL";
