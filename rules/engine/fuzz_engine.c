// SPDX-License-Identifier: GPL-2.0 OR MIT
/*
 * libFuzzer harness for engine.c.
 *
 * Input: [u16 LE program length][program][u8 port][frame bytes].
 * port byte: bits 0-1 the port passed to rs_run (0..3, so invalid ports
 * are exercised too), bit 2 RS_RUN_L3.
 *
 * Build and run:
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined \
 *         -fno-sanitize-recover=undefined fuzz_engine.c engine.c \
 *         -o /tmp/fuzz_engine
 *   /tmp/fuzz_engine -max_total_time=60 CORPUS_DIR
 *
 * The frame lives in a heap buffer of exactly len + 4 bytes, passed as cap,
 * so AddressSanitizer catches any access past cap; the state buffer has
 * exactly the size the verifier asked for.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "rs_program.h"

#define RUNS 4

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	uint32_t plen, flen, state_size = 0, port, i;
	const uint8_t *frame_in;
	uint8_t *prog, *frame;
	void *state;

	/* the verifier must survive anything */
	rs_program_verify(data, (uint32_t)(size > 0xffffffffu ? 0 : size),
			  &state_size);

	if (size < 3)
		return 0;
	plen = data[0] | (uint32_t)data[1] << 8;
	if (size < 2 + (size_t)plen + 1)
		return 0;
	/* exact-size copy: reads past the program's end trip ASan */
	prog = malloc(plen ? plen : 1);
	if (!prog)
		return 0;
	memcpy(prog, data + 2, plen);
	if (rs_program_verify(prog, plen, &state_size)) {
		free(prog);
		return 0;
	}

	port = data[2 + plen];
	frame_in = data + 3 + plen;
	flen = (uint32_t)(size - 3 - plen);
	if (flen > RS_MAX_FRAME + 8)
		flen = RS_MAX_FRAME + 8;

	state = malloc(state_size);
	frame = malloc((size_t)flen + 4);
	if (!state || !frame)
		goto out;
	rs_state_init(prog, plen, state, state_size, 42);

	for (i = 0; i < RUNS; i++) {
		struct rs_verdict v;

		memcpy(frame, frame_in, flen);
		rs_run(prog, plen, state, frame, flen, flen + 4, port & 3,
		       (port >> 2) & RS_RUN_L3, 1000000ull * i * i, &v);
		if (v.len > flen + 4 || v.verdict > RS_V_DROP)
			abort();
	}
	/* what carriers run before the rules, on what the rules left */
	rs_csum_complete_seeded(frame, flen, (port >> 2) & RS_RUN_L3);
	rs_csum_complete(frame, flen, (port >> 2) & RS_RUN_L3);
out:
	free(frame);
	free(state);
	free(prog);
	return 0;
}
