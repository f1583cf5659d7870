// SPDX-License-Identifier: GPL-2.0 OR MIT
/*
 * Ring mode's slow path: the queues that carry the frames of hook rules from
 * the loop to the Python worker (bridge/modes/ring.py, HookWorker) and back.
 * Each is a ring of HOOKQ_SIZE slots with one producer and one consumer, and
 * an eventfd: the worker sleeps on to_py's, the loop polls from_py's.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/eventfd.h>

#include "ring_internal.h"

#define HOOKQ_SIZE   1024          /* frames on their way to or from the Python hooks */

/* Both queues with slots of fw->slot_size bytes; 0 or -1 (out of memory or eventfds). */
int rs_hook_queues_open(struct rs_forwarder *fw)
{
	int i;

	for (i = 0; i < 2; i++) {
		struct rs_hookq *q = i ? &fw->from_py : &fw->to_py;

		q->meta = calloc(HOOKQ_SIZE, sizeof(*q->meta));
		q->buf = malloc((size_t)HOOKQ_SIZE * fw->slot_size);
		/* the worker blocks on to_py's; the loop polls from_py's */
		q->efd = eventfd(0, EFD_CLOEXEC | (i ? EFD_NONBLOCK : 0));
		if (!q->meta || !q->buf || q->efd < 0)
			return -1;
	}
	return 0;
}

void rs_hook_queues_close(struct rs_forwarder *fw)
{
	int i;

	for (i = 0; i < 2; i++) {
		struct rs_hookq *q = i ? &fw->from_py : &fw->to_py;

		if (q->efd >= 0)
			close(q->efd);
		free(q->meta);
		free(q->buf);
	}
}

/* Copies a frame into q's next slot; -1 when q is full or the frame longer than a slot. */
int rs_hookq_push(struct rs_hookq *q, uint32_t slot_size, const struct rs_hook_meta *m, const uint8_t *f)
{
	uint32_t tail = q->tail, head = __atomic_load_n(&q->head, __ATOMIC_ACQUIRE);

	if (tail - head >= HOOKQ_SIZE || m->len > slot_size)
		return -1;
	memcpy(q->buf + (size_t)(tail % HOOKQ_SIZE) * slot_size, f, m->len);
	q->meta[tail % HOOKQ_SIZE] = *m;
	__atomic_store_n(&q->tail, tail + 1, __ATOMIC_RELEASE);
	return 0;
}

static int hookq_pop(struct rs_hookq *q, uint32_t slot_size, struct rs_hook_meta *m, uint8_t *f, uint32_t cap)
{
	uint32_t head = q->head, tail = __atomic_load_n(&q->tail, __ATOMIC_ACQUIRE), len;

	if (head == tail)
		return 0;
	*m = q->meta[head % HOOKQ_SIZE];
	len = m->len < cap ? m->len : cap;
	memcpy(f, q->buf + (size_t)(head % HOOKQ_SIZE) * slot_size, len);
	__atomic_store_n(&q->head, head + 1, __ATOMIC_RELEASE);
	return (int)len;
}

/* Wakes whoever sleeps on efd. */
void rs_efd_signal(int efd)
{
	uint64_t one = 1;

	if (write(efd, &one, sizeof(one)) < 0) {
		/* the counter cannot overflow in practice; a lost wake-up only delays */
	}
}

void rs_forwarder_set_hooks(struct rs_forwarder *fw, const uint8_t *flags, uint32_t n)
{
	uint32_t i;

	fw->hooks_on = 0;
	for (i = 0; i < RS_MAX_RULES; i++) {
		fw->hook_rule[i] = i < n ? flags[i] != 0 : 0;
		fw->hooks_on |= fw->hook_rule[i];
	}
	/* hooks see wire frames (their queue slots hold one) */
	fw->cut = fw->prog_wire || fw->hooks_on;
}

int rs_forwarder_hook_fd(struct rs_forwarder *fw)
{
	return fw->to_py.efd;
}

int rs_forwarder_hook_take(struct rs_forwarder *fw, struct rs_hook_meta *m, uint8_t *buf, uint32_t cap)
{
	return hookq_pop(&fw->to_py, fw->slot_size, m, buf, cap);
}

int rs_forwarder_hook_put(struct rs_forwarder *fw, const struct rs_hook_meta *m, const uint8_t *frame)
{
	if (m->port > 1 || rs_hookq_push(&fw->from_py, fw->slot_size, m, frame))
		return -ENOSPC;
	rs_efd_signal(fw->from_py.efd);
	return 0;
}

void rs_forwarder_hook_wake(struct rs_forwarder *fw)
{
	rs_efd_signal(fw->to_py.efd);
}

uint32_t rs_forwarder_generation(struct rs_forwarder *fw)
{
	return fw->gen;
}

/* Frames the hooks gave back: out of the port they name. */
int rs_hook_returns(struct rs_forwarder *fw)
{
	struct rs_hook_meta m;
	int n = 0, len;

	while ((len = hookq_pop(&fw->from_py, fw->slot_size, &m, fw->work, WORK_CAP)) > 0) {
		rs_emit(fw, m.port, fw->work, (uint32_t)len, m.pcp, 0);
		fw->st.hook_returned++;
		n++;
	}
	return n;
}
