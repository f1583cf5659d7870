// SPDX-License-Identifier: GPL-2.0 OR MIT
/*
 * `reshaper apply`'s loop (apply_loop.h): each frame as the arriving port
 * sees it (trunk form's tag off), through rs_run(), then with the other
 * port's tag into the queue of departures, written in departure order (ties
 * in arrival order) as nanosecond pcap or pcapng records, byte for byte what
 * bridge/captures.py's writers write.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "apply_loop.h"

#define NS 1000000000ull
#define OUT_BUFFER (1u << 20)  /* bytes of records gathered per write(2) */
#define MAC_ADDRS_LEN 12       /* the destination and source addresses, before a tag */
#define PCAP_RECORD_LEN 16     /* seconds, nanoseconds, captured length, length */
#define EPB_FIXED_LEN 32       /* type, length, interface, time high, low, captured length, length; length */
#define SPB_FIXED_LEN 16       /* type, length, length on the wire; length */

struct departure {
	uint64_t t_ns;
	uint64_t seq;      /* arrival order: ties leave in it */
	uint32_t over;     /* t_ns wrapped past 2^64 */
	uint32_t len;
	uint8_t *frame;
};

struct rs_apply_queue {
	struct departure *heap;  /* a binary heap, the earliest first */
	size_t n, cap;
	uint64_t seq;
	uint8_t *frame;          /* RS_MAX_FRAME + RS_FRAME_ROOM: the frame the engine runs on */
	uint8_t *out;            /* OUT_BUFFER bytes of records not yet written */
	size_t out_len;
	struct departure unwritable;  /* the one rs_apply_*() stopped at, freed by rs_apply_close() */
};

static uint32_t rd32(const uint8_t *p, uint32_t big)
{
	if (big)
		return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
	return (uint32_t)p[3] << 24 | (uint32_t)p[2] << 16 | (uint32_t)p[1] << 8 | p[0];
}

static uint8_t *wr32(uint8_t *p, uint32_t v)  /* little-endian, as the writers of bridge/captures.py */
{
	p[0] = v;
	p[1] = v >> 8;
	p[2] = v >> 16;
	p[3] = v >> 24;
	return p + 4;
}

static uint32_t pad4(uint32_t n)
{
	return (n + 3) & ~3u;
}

static int before(const struct departure *x, const struct departure *y)
{
	if (x->over != y->over)
		return x->over < y->over;
	if (x->t_ns != y->t_ns)
		return x->t_ns < y->t_ns;
	return x->seq < y->seq;
}

/* Copies frame[0, len) to p, with the 802.1Q tag tci after its addresses when tag is set;
 * returns where it ended. */
static uint8_t *put_tagged(uint8_t *p, const uint8_t *frame, uint32_t len, int tag, uint16_t tci)
{
	uint32_t head = len < MAC_ADDRS_LEN ? len : MAC_ADDRS_LEN;

	memcpy(p, frame, head);
	p += head;
	if (tag) {
		*p++ = RS_ETH_P_8021Q >> 8;
		*p++ = RS_ETH_P_8021Q & 0xff;
		*p++ = tci >> 8;
		*p++ = tci & 0xff;
	}
	memcpy(p, frame + head, len - head);
	return p + len - head;
}

/* ---- the output ---- */

static int out_flush(struct rs_apply *a)
{
	struct rs_apply_queue *q = a->queue;
	size_t done = 0;

	while (done < q->out_len) {
		ssize_t n = write(a->fd, q->out + done, q->out_len - done);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			a->io_errno = n < 0 ? errno : EIO;
			return RS_APPLY_IO;
		}
		done += (size_t)n;
	}
	q->out_len = 0;
	return RS_APPLY_OK;
}

static int writable(const struct rs_apply *a, uint64_t t_ns, uint32_t over, uint32_t len)
{
	if (over)
		return 0;
	if (a->pcapng)
		return 1;
	return (t_ns / NS) >> 32 == 0 && len <= a->snaplen;  /* pcap's 32-bit seconds, its snaplen */
}

/* Writes a record of frame[0, len) with, when tag is set, the 802.1Q tag tci after its addresses. */
static int out_record(struct rs_apply *a, uint64_t t_ns, const uint8_t *frame, uint32_t len, int tag, uint16_t tci)
{
	struct rs_apply_queue *q = a->queue;
	uint32_t n = len + (tag ? RS_VLAN_HLEN : 0), block = EPB_FIXED_LEN + pad4(n);
	uint8_t *p;

	if (OUT_BUFFER - q->out_len < block) {
		int rc = out_flush(a);
		if (rc)
			return rc;
	}
	p = q->out + q->out_len;
	if (a->pcapng) {
		p = wr32(p, RS_PCAPNG_EPB);
		p = wr32(p, block);
		p = wr32(p, 0);  /* the output's one interface */
		p = wr32(p, t_ns >> 32);
		p = wr32(p, (uint32_t)t_ns);
	} else {
		p = wr32(p, t_ns / NS);
		p = wr32(p, t_ns % NS);
	}
	p = wr32(p, n);
	p = wr32(p, n);
	p = put_tagged(p, frame, len, tag, tci);
	if (a->pcapng) {
		memset(p, 0, pad4(n) - n);
		p = wr32(p + pad4(n) - n, block);
	}
	q->out_len = (size_t)(p - q->out);
	a->frames_out++;
	return RS_APPLY_OK;
}

/* ---- the departures ---- */

static void heap_pop(struct rs_apply_queue *q, struct departure *top)
{
	struct departure last;
	size_t i = 0;

	*top = q->heap[0];
	last = q->heap[--q->n];
	for (;;) {
		size_t c = 2 * i + 1;
		if (c >= q->n)
			break;
		if (c + 1 < q->n && before(&q->heap[c + 1], &q->heap[c]))
			c++;
		if (!before(&q->heap[c], &last))
			break;
		q->heap[i] = q->heap[c];
		i = c;
	}
	if (q->n)
		q->heap[i] = last;
}

static int heap_push(struct rs_apply_queue *q, const struct departure *d)
{
	size_t i;

	if (q->n == q->cap) {
		size_t cap = q->cap ? 2 * q->cap : 1024;
		struct departure *heap = realloc(q->heap, cap * sizeof(*heap));
		if (!heap)
			return RS_APPLY_NOMEM;
		q->heap = heap;
		q->cap = cap;
	}
	for (i = q->n++; i > 0 && before(d, &q->heap[(i - 1) / 2]); i = (i - 1) / 2)
		q->heap[i] = q->heap[(i - 1) / 2];
	q->heap[i] = *d;
	return RS_APPLY_OK;
}

/* Writes what departs by until_ns (everything when all is set): departures are never before arrivals */
static int flush(struct rs_apply *a, uint64_t until_ns, int all)
{
	struct rs_apply_queue *q = a->queue;

	while (q->n && (all || (!q->heap[0].over && q->heap[0].t_ns <= until_ns))) {
		struct departure d;
		int rc;

		heap_pop(q, &d);
		if (!writable(a, d.t_ns, d.over, d.len)) {
			q->unwritable = d;
			a->unwritable_ns = d.t_ns;
			a->unwritable_over = d.over;
			a->unwritable_len = d.len;
			a->unwritable_frame = d.frame;
			return RS_APPLY_UNWRITABLE;
		}
		rc = out_record(a, d.t_ns, d.frame, d.len, 0, 0);
		free(d.frame);
		if (rc)
			return rc;
	}
	return RS_APPLY_OK;
}

/* Queues frame[0, len) (tagged with tci after its addresses when tag is set) to leave at t_ns */
static int depart(struct rs_apply *a, uint64_t now_ns, uint64_t t_ns, uint32_t over, const uint8_t *frame,
		  uint32_t len, int tag, uint16_t tci)
{
	struct rs_apply_queue *q = a->queue;
	uint32_t n = len + (tag ? RS_VLAN_HLEN : 0);
	struct departure d = { .t_ns = t_ns, .seq = q->seq++, .over = over, .len = n };
	int rc;

	/* Leaving as it arrives: everything queued leaves after now (flush() wrote the rest), and
	 * whatever comes later is later in order, so it is the next to leave: written at once. A
	 * departure the output cannot hold waits its turn, so the error comes where Python's came. */
	if (t_ns == now_ns && !over && writable(a, t_ns, 0, n))
		return out_record(a, t_ns, frame, len, tag, tci);
	d.frame = malloc(n ? n : 1);
	if (!d.frame)
		return RS_APPLY_NOMEM;
	put_tagged(d.frame, frame, len, tag, tci);
	rc = heap_push(q, &d);
	if (rc)
		free(d.frame);
	return rc;
}

/* ---- the frames ---- */

int rs_apply_frame(struct rs_apply *a, uint64_t now_ns, const uint8_t *data, uint32_t len)
{
	struct rs_apply_queue *q = a->queue;
	struct rs_verdict v;
	uint32_t pcp = 0, over, i;
	uint64_t t_ns;
	int rc = flush(a, now_ns, 0);

	if (rc)
		return rc;
	/* schedules count from the capture's first frame (docs/schedules.md) */
	if (!a->frames_in++)
		rs_state_start(a->state, now_ns, now_ns);
	if (a->in_vlan >= 0) {
		/* a port in trunk form owns only frames tagged with its VLAN; the tag comes off */
		uint32_t tci;

		if (len < RS_ETH_HLEN + RS_VLAN_HLEN
		    || (uint32_t)(data[MAC_ADDRS_LEN] << 8 | data[MAC_ADDRS_LEN + 1]) != RS_ETH_P_8021Q) {
			a->not_on_port++;
			return RS_APPLY_OK;
		}
		tci = (uint32_t)data[MAC_ADDRS_LEN + 2] << 8 | data[MAC_ADDRS_LEN + 3];
		if ((tci & 0x0fff) != (uint32_t)a->in_vlan) {
			a->not_on_port++;
			return RS_APPLY_OK;
		}
		pcp = tci >> 13;
		memcpy(q->frame, data, MAC_ADDRS_LEN);
		memcpy(q->frame + MAC_ADDRS_LEN, data + MAC_ADDRS_LEN + RS_VLAN_HLEN, len - MAC_ADDRS_LEN - RS_VLAN_HLEN);
		len -= RS_VLAN_HLEN;
	} else {
		memcpy(q->frame, data, len);
	}
	rs_run(a->state, q->frame, len, len + RS_FRAME_ROOM, a->port, 0, now_ns, &v);
	if (v.verdict != RS_V_FORWARD) {
		a->dropped[v.reason < RS_APPLY_REASONS ? v.reason : RS_APPLY_REASONS - 1]++;
		return RS_APPLY_OK;
	}
	t_ns = now_ns + v.delay_ns;
	over = t_ns < now_ns;
	for (i = 0; i <= v.copies; i++) {
		rc = depart(a, now_ns, t_ns, over, q->frame, v.len, a->out_vlan >= 0,
			    (uint16_t)(pcp << 13 | (uint32_t)(a->out_vlan & 0x0fff)));
		if (rc)
			return rc;
	}
	return RS_APPLY_OK;
}

/* Whether a packet's lengths are what Python's reader takes (its _check_frame) */
static int whole_frame(uint32_t caplen, uint32_t wirelen, uint32_t snaplen)
{
	return (!snaplen || caplen <= snaplen) && caplen == wirelen && caplen <= RS_MAX_FRAME;
}

/* An enhanced packet block's time in ns, when a whole number of them and within 64 bits */
static int epb_time(const struct rs_apply_iface *iface, uint64_t ts, uint64_t *t_ns)
{
	uint64_t ticks, offset;

	if (!iface->ns_per_tick || ts > UINT64_MAX / iface->ns_per_tick)
		return 0;
	ticks = ts * iface->ns_per_tick;
	if (iface->offset_s >= 0) {
		if ((uint64_t)iface->offset_s > UINT64_MAX / NS)
			return 0;
		offset = (uint64_t)iface->offset_s * NS;
		if (ticks > UINT64_MAX - offset)
			return 0;
		*t_ns = ticks + offset;
		return 1;
	}
	if (iface->offset_s == INT64_MIN || (uint64_t)-iface->offset_s > UINT64_MAX / NS)
		return 0;
	offset = (uint64_t)-iface->offset_s * NS;
	if (ticks < offset)
		return 0;
	*t_ns = ticks - offset;
	return 1;
}

static int pcap_records(struct rs_apply *a, struct rs_apply_input *in, const uint8_t *buf, size_t len)
{
	while (len - in->taken >= PCAP_RECORD_LEN) {
		const uint8_t *r = buf + in->taken;
		uint32_t sec = rd32(r, in->big_endian), frac = rd32(r + 4, in->big_endian);
		uint32_t caplen = rd32(r + 8, in->big_endian), wirelen = rd32(r + 12, in->big_endian);
		int rc;

		if (!whole_frame(caplen, wirelen, in->snaplen) || (uint64_t)frac * in->unit_ns >= NS
		    || len - in->taken - PCAP_RECORD_LEN < caplen)
			break;
		in->taken += PCAP_RECORD_LEN + caplen;
		in->records++;
		rc = rs_apply_frame(a, sec * NS + (uint64_t)frac * in->unit_ns, r + PCAP_RECORD_LEN, caplen);
		if (rc)
			return rc;
	}
	return RS_APPLY_OK;
}

static int pcapng_records(struct rs_apply *a, struct rs_apply_input *in, const uint8_t *buf, size_t len)
{
	uint32_t big = in->big_endian;

	while (len - in->taken >= SPB_FIXED_LEN) {
		const uint8_t *b = buf + in->taken;
		uint32_t type = rd32(b, big), length = rd32(b + 4, big), caplen, wirelen;
		const uint8_t *data;
		uint64_t t_ns;
		int rc;

		if (length % 4 || length < SPB_FIXED_LEN || length > len - in->taken || rd32(b + length - 4, big) != length)
			break;
		if (type == RS_PCAPNG_EPB) {
			const struct rs_apply_iface *iface;
			uint32_t id = rd32(b + 8, big);

			if (length < EPB_FIXED_LEN || id >= in->n_ifaces || !in->ifaces[id].ethernet)
				break;
			iface = &in->ifaces[id];
			caplen = rd32(b + 20, big);
			wirelen = rd32(b + 24, big);
			if (!whole_frame(caplen, wirelen, iface->snaplen) || EPB_FIXED_LEN + pad4(caplen) > length
			    || !epb_time(iface, (uint64_t)rd32(b + 12, big) << 32 | rd32(b + 16, big), &t_ns))
				break;
			data = b + 28;
		} else if (type == RS_PCAPNG_SPB) {
			/* the frame from interface 0, cut at its snaplen, at the time of the packet before it */
			uint32_t snaplen;

			if (!in->n_ifaces || !in->ifaces[0].ethernet)
				break;
			snaplen = in->ifaces[0].snaplen;
			wirelen = rd32(b + 8, big);
			caplen = snaplen && snaplen < wirelen ? snaplen : wirelen;
			if (!whole_frame(caplen, wirelen, snaplen) || length != SPB_FIXED_LEN + pad4(caplen))
				break;
			t_ns = in->last_ns;
			data = b + 12;
		} else {
			break;
		}
		in->taken += length;
		in->records++;
		in->last_ns = t_ns;
		rc = rs_apply_frame(a, t_ns, data, caplen);
		if (rc)
			return rc;
	}
	return RS_APPLY_OK;
}

int rs_apply_records(struct rs_apply *a, struct rs_apply_input *in, const uint8_t *buf, size_t len)
{
	in->taken = 0;
	in->records = 0;
	return in->pcapng ? pcapng_records(a, in, buf, len) : pcap_records(a, in, buf, len);
}

int rs_apply_finish(struct rs_apply *a)
{
	int rc = flush(a, 0, 1);

	return rc ? rc : out_flush(a);
}

int rs_apply_open(struct rs_apply *a)
{
	struct rs_apply_queue *q = calloc(1, sizeof(*q));

	a->queue = q;
	if (!q)
		return RS_APPLY_NOMEM;
	q->frame = malloc(RS_MAX_FRAME + RS_FRAME_ROOM);
	q->out = malloc(OUT_BUFFER);
	return q->frame && q->out ? RS_APPLY_OK : RS_APPLY_NOMEM;
}

void rs_apply_close(struct rs_apply *a)
{
	struct rs_apply_queue *q = a->queue;

	if (!q)
		return;
	while (q->n)
		free(q->heap[--q->n].frame);
	free(q->unwritable.frame);
	free(q->heap);
	free(q->frame);
	free(q->out);
	free(q);
	a->queue = NULL;
}
