// SPDX-License-Identifier: GPL-2.0 OR MIT
/*
 * Engine cost per frame, natively (ns) and under callgrind (instructions).
 *
 * Input file: [u32 LE program length][program][u32 LE frame count]
 *             then per frame [u16 LE length][bytes].
 * Usage: bench_engine INPUT ITERATIONS [reference|none]
 * Runs rs_run(), or rs_run_reference() (every rule in turn), or an entry that
 * does nothing, when asked.
 * Prints: frames=N ns_per_frame=X. Under callgrind, an entry's cost is the
 * whole run's Ir less that of the same run with `none`, over the frames
 * printed. (Collecting inside the entry alone, --toggle-collect, also counted
 * this loop and its memcpy on armhf: callgrind there did not see rs_run return.)
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "rs_program.h"

#define MAX_FRAMES 256

/* the loop and its calls without an engine: what bench/engine.py subtracts */
static __attribute__((__noinline__)) void run_none(void *state, uint8_t *frame, uint32_t len, uint32_t cap,
						  uint32_t port, uint32_t run_flags, uint64_t now_ns,
						  struct rs_verdict *v)
{
	__asm__ volatile("" : : "r"(state), "r"(frame), "r"(v) : "memory");
}

static uint32_t get32(const uint8_t *p) { return p[0] | p[1] << 8 | p[2] << 16 | (uint32_t)p[3] << 24; }

int main(int argc, char **argv)
{
	static uint8_t file[1 << 20], frames[MAX_FRAMES][2048], work[2048 + RS_FRAME_ROOM];
	uint32_t lens[MAX_FRAMES], plen, n, state_size, i, off;
	struct rs_verdict v;
	struct timespec t0, t1;
	unsigned long iterations, it;
	size_t size;
	void *state;
	FILE *f;

	void (*run)(void *, uint8_t *, uint32_t, uint32_t, uint32_t, uint32_t, uint64_t, struct rs_verdict *) = rs_run;

	if (argc < 3 || argc > 4 || !(f = fopen(argv[1], "rb"))) {
		fprintf(stderr, "usage: bench_engine INPUT ITERATIONS [reference|none]\n");
		return 2;
	}
	size = fread(file, 1, sizeof(file), f);
	fclose(f);
	iterations = strtoul(argv[2], NULL, 10);
	if (argc == 4 && !strcmp(argv[3], "reference"))
		run = rs_run_reference;
	else if (argc == 4 && !strcmp(argv[3], "none"))
		run = run_none;
	plen = get32(file);
	if (size < 8 + plen || rs_program_verify(file + 4, plen, &state_size)) {
		fprintf(stderr, "bench_engine: bad input or program\n");
		return 1;
	}
	n = get32(file + 4 + plen);
	off = 8 + plen;
	for (i = 0; i < n && i < MAX_FRAMES; i++) {
		lens[i] = file[off] | file[off + 1] << 8;
		memcpy(frames[i], file + off + 2, lens[i]);
		off += 2 + lens[i];
	}
	n = i;
	state = calloc(1, state_size);
	rs_state_init(file + 4, plen, state, state_size, 1);
	clock_gettime(CLOCK_MONOTONIC, &t0);
	for (it = 0; it < iterations; it++) {
		for (i = 0; i < n; i++) {
			/* a fresh copy each time: rewrites must not pile up */
			memcpy(work, frames[i], lens[i]);
			run(state, work, lens[i], lens[i] + RS_FRAME_ROOM, (i & 1) ? RS_PORT_B : RS_PORT_A, 0,
			    it * 1000 + i, &v);
		}
	}
	clock_gettime(CLOCK_MONOTONIC, &t1);
	printf("frames=%lu ns_per_frame=%.1f\n", iterations * n,
	       ((t1.tv_sec - t0.tv_sec) * 1e9 + (t1.tv_nsec - t0.tv_nsec)) / (double)(iterations * n));
	free(state);
	return 0;
}
