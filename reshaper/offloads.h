/* SPDX-License-Identifier: GPL-2.0 OR MIT */
/*
 * A port interface's segmentation offloads (GRO, GSO, TSO), switched through
 * the ethtool ioctl. Ring mode turns GRO off on its ports, so that the rules
 * see and time the frames of the wire, and puts back at exit what it found
 * (bridge/modes/ring.py); the benchmark and the tests set them on their hosts.
 * Python sees this header through reshaper/_ffi_build.py (bridge/offloads.py):
 * the bits below are the one source of GRO, GSO and TSO.
 */
#ifndef RS_OFFLOADS_H
#define RS_OFFLOADS_H

#define RS_OFFLOAD_GRO 1
#define RS_OFFLOAD_GSO 2
#define RS_OFFLOAD_TSO 4

/* Turns the offloads in features (RS_OFFLOAD_* bits) off (on=0) or on; returns which of them were on
 * before, as RS_OFFLOAD_* bits, or -errno. A device without one of them is not an error. */
int rs_set_offloads(const char *ifname, int features, int on);

#endif /* RS_OFFLOADS_H */
