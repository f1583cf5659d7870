/* SPDX-License-Identifier: GPL-2.0 OR MIT */
/*
 * What XDP mode's program (ring/bpf/xsk_redirect.c) and the forwarder that
 * loads it (ring/xsk.c) agree on: names, and the size of the socket map.
 */
#ifndef RS_XSK_ABI_H
#define RS_XSK_ABI_H

#define RS_XSK_PROG_NAME  "reshaper_xsk"   /* the program in the object, and as bpftool lists it */
#define RS_XSK_MAP_NAME   "rs_xsks"
#define RS_XSK_MAX_QUEUES 64               /* receive queues the map can name */

#endif /* RS_XSK_ABI_H */
