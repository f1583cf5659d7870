/* SPDX-License-Identifier: GPL-2.0 OR MIT */
/*
 * The few things the engine needs from its surroundings, so that engine.c
 * compiles unchanged in the kernel, in the cffi extension and in harnesses.
 */
#ifndef RS_COMPAT_H
#define RS_COMPAT_H

#ifdef __KERNEL__
#include <linux/types.h>
#include <linux/math64.h>
/* 32-bit ARM kernels have no libgcc 64-bit division helpers */
static inline uint64_t rs_div64(uint64_t a, uint64_t b) { return div64_u64(a, b); }
#else
#include <stdint.h>
static inline uint64_t rs_div64(uint64_t a, uint64_t b) { return a / b; }
#endif

/* program integers are little-endian (PROGRAM.md): on a CPU of that order engine.c reads them in one load */
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
#define RS_LITTLE_ENDIAN 1
#endif

/* a 32-bit CPU: engine.c's rs_count adds to a 64-bit counter's words apart */
#if defined(__SIZEOF_POINTER__) && __SIZEOF_POINTER__ == 4
#define RS_CPU32 1
#endif

#endif /* RS_COMPAT_H */
