// SPDX-License-Identifier: GPL-2.0 OR MIT
/*
 * Ring mode's links: a port interface's AF_PACKET sockets and PACKET_MMAP rings.
 * Opening and closing them, flushing the TX ring, and the socket's queue beside
 * the RX ring, where a frame longer than a slot waits whole.
 *
 * Why TPACKET_V2 for receive: a V3 block is handed to user space when it is
 * full or its timeout expires, which adds up to the timeout to every frame at
 * low rates (measured: 1.1 ms p50 with a 1 ms timeout, against 140 us for V2;
 * docs/modes.md). V2 hands over each frame as it lands.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <linux/if_ether.h>
#include <net/if.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/uio.h>

#include "ring_internal.h"

#define SNDBUF_BYTES (4 << 20)
/* super-frames waiting on the socket's queue, beside the ring: about 200 of 64 KB */
#define RCVBUF_BYTES (16 << 20)

static int fail(char *err, uint32_t errlen, const char *what, const char *ifname)
{
	int e = errno;

	snprintf(err, errlen, "%s %s: %s", what, ifname, strerror(e));
	return -1;
}

/* Opens the sockets and rings of l on ifname; -1 with why in err (rs_link_close undoes what was done). */
int rs_link_open(struct rs_link *l, const char *ifname, const struct rs_forwarder_config *cfg,
		 char *err, uint32_t errlen)
{
	struct tpacket_req req;
	struct sockaddr_ll sll;
	struct packet_mreq mr;
	int one = 1, version = TPACKET_V2, sndbuf = SNDBUF_BYTES, rcvbuf = RCVBUF_BYTES, ifindex;
	uint32_t block = cfg->frame_size > 65536 ? cfg->frame_size : 65536;

	ifindex = (int)if_nametoindex(ifname);
	if (!ifindex)
		return fail(err, errlen, "no interface", ifname);
	/* protocol 0: nothing is queued to the socket before its rings exist */
	l->fd = socket(AF_PACKET, SOCK_RAW, 0);
	if (l->fd < 0)
		return fail(err, errlen, "AF_PACKET socket for", ifname);
	if (setsockopt(l->fd, SOL_PACKET, PACKET_VERSION, &version, sizeof(version)))
		return fail(err, errlen, "TPACKET_V2 on", ifname);
	/* our own transmissions must not come back in through the RX ring */
	setsockopt(l->fd, SOL_PACKET, PACKET_IGNORE_OUTGOING, &one, sizeof(one));
	/* the forwarder is the only sender here: skip the qdisc, as a NIC driver would see us */
	setsockopt(l->fd, SOL_PACKET, PACKET_QDISC_BYPASS, &one, sizeof(one));
	/* a frame the device refuses is skipped, not left to block the TX ring */
	setsockopt(l->fd, SOL_PACKET, PACKET_LOSS, &one, sizeof(one));
	/* TX ring frames are charged to the send buffer: the default stalls bursts */
	if (setsockopt(l->fd, SOL_SOCKET, SO_SNDBUFFORCE, &sndbuf, sizeof(sndbuf)))
		setsockopt(l->fd, SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof(sndbuf));
	/* super-frames (super_frames.c): the header says how to cut them; set before the rings */
	if (setsockopt(l->fd, SOL_PACKET, PACKET_VNET_HDR, &one, sizeof(one)))
		return fail(err, errlen, "PACKET_VNET_HDR on", ifname);
	/* a frame longer than a slot is queued whole to the socket too; its queue is charged to rcvbuf */
	if (setsockopt(l->fd, SOL_PACKET, PACKET_COPY_THRESH, &one, sizeof(one)))
		return fail(err, errlen, "PACKET_COPY_THRESH on", ifname);
	if (setsockopt(l->fd, SOL_SOCKET, SO_RCVBUFFORCE, &rcvbuf, sizeof(rcvbuf)))
		setsockopt(l->fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof(rcvbuf));

	l->frame_size = cfg->frame_size;
	l->nframes = (cfg->ring_frames * cfg->frame_size + block - 1) / block * (block / cfg->frame_size);
	memset(&req, 0, sizeof(req));
	req.tp_block_size = block;
	req.tp_frame_size = cfg->frame_size;
	req.tp_frame_nr = l->nframes;
	req.tp_block_nr = l->nframes / (block / cfg->frame_size);
	if (setsockopt(l->fd, SOL_PACKET, PACKET_RX_RING, &req, sizeof(req)) ||
	    setsockopt(l->fd, SOL_PACKET, PACKET_TX_RING, &req, sizeof(req)))
		return fail(err, errlen, "PACKET_RX_RING/TX_RING on", ifname);
	l->map_len = 2 * (size_t)req.tp_block_size * req.tp_block_nr;
	l->map = mmap(NULL, l->map_len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, l->fd, 0);
	if (l->map == MAP_FAILED) {
		l->map = NULL;
		return fail(err, errlen, "mmap of the rings of", ifname);
	}
	l->rx = l->map;
	l->tx = l->map + l->map_len / 2;

	/* promiscuous through the socket: the kernel undoes it when the socket goes */
	memset(&mr, 0, sizeof(mr));
	mr.mr_ifindex = ifindex;
	mr.mr_type = PACKET_MR_PROMISC;
	if (setsockopt(l->fd, SOL_PACKET, PACKET_ADD_MEMBERSHIP, &mr, sizeof(mr)))
		return fail(err, errlen, "promiscuous mode on", ifname);

	memset(&sll, 0, sizeof(sll));
	sll.sll_family = AF_PACKET;
	sll.sll_protocol = htons(ETH_P_ALL);
	sll.sll_ifindex = ifindex;
	if (bind(l->fd, (struct sockaddr *)&sll, sizeof(sll)))
		return fail(err, errlen, "bind to", ifname);

	/*
	 * Super-frames leave through a socket without rings (a TX ring slot holds an
	 * MTU frame, and a socket with a TX ring sends only from it), bound with
	 * protocol 0 so that it receives nothing. Not past the qdisc: where the device
	 * cannot take one whole (TSO off, no UDP segmentation) the kernel cuts it on
	 * the qdisc path, and drops it on the direct one (PACKET_QDISC_BYPASS).
	 */
	l->gso_fd = socket(AF_PACKET, SOCK_RAW, 0);
	if (l->gso_fd < 0)
		return fail(err, errlen, "AF_PACKET socket for", ifname);
	if (setsockopt(l->gso_fd, SOL_PACKET, PACKET_VNET_HDR, &one, sizeof(one)))
		return fail(err, errlen, "PACKET_VNET_HDR on", ifname);
	if (setsockopt(l->gso_fd, SOL_SOCKET, SO_SNDBUFFORCE, &sndbuf, sizeof(sndbuf)))
		setsockopt(l->gso_fd, SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof(sndbuf));
	sll.sll_protocol = 0;
	if (bind(l->gso_fd, (struct sockaddr *)&sll, sizeof(sll)))
		return fail(err, errlen, "bind to", ifname);
	return 0;
}

void rs_link_close(struct rs_link *l)
{
	if (l->map)
		munmap(l->map, l->map_len);
	if (l->fd >= 0)
		close(l->fd);
	if (l->gso_fd >= 0)
		close(l->gso_fd);
	l->map = NULL;
	l->fd = l->gso_fd = -1;
}

/* Has the kernel send what the TX ring holds. */
void rs_link_kick(struct rs_forwarder *fw, struct rs_link *l)
{
	if (l->xsk) {
		rs_xsk_kick(fw, l);
		return;
	}
	if (!l->tx_pending)
		return;
	if (send(l->fd, NULL, 0, MSG_DONTWAIT) < 0 && errno != EAGAIN && errno != ENOBUFS) {
		/* e.g. ENETDOWN: the frames stay in the ring for the next kick */
		fw->st.port[l->port[0]].tx_errors++;
		return;
	}
	l->tx_pending = 0;
}

/* Throws away the whole copy of a frame the ring holds the start of (TP_STATUS_COPY). */
void rs_link_drop_copy(struct rs_link *l, const struct tpacket2_hdr *h)
{
	uint8_t vh[VNET_HLEN];

	if ((h->tp_status & TP_STATUS_COPY) && recv(l->fd, vh, sizeof(vh), MSG_DONTWAIT | MSG_TRUNC) < 0) {
		/* nothing queued after all: nothing to throw away */
	}
}

/*
 * The whole of a frame the ring holds the start of, from the socket's queue
 * (copies are queued in ring order), into w as the forwarder lays it out (forwarder.c, handle_rx): the
 * first 12 bytes, cut bytes of a port tag left out, ins bytes of room for an
 * inner tag. Its length in w, or -1.
 */
int rs_link_take_copy(struct rs_link *l, const struct tpacket2_hdr *h, uint8_t *w, uint32_t cut, uint32_t ins,
		      struct virtio_net_hdr *vh)
{
	uint8_t tag[VLAN_HLEN];
	struct iovec iov[4] = {
		{ vh, VNET_HLEN }, { w, 12 }, { tag, cut }, { w + 12 + ins, WORK_CAP - 12 - ins },
	};
	struct msghdr msg = { .msg_iov = iov, .msg_iovlen = 4 };
	ssize_t n = recvmsg(l->fd, &msg, MSG_DONTWAIT | MSG_TRUNC);

	if (n < 0 || (size_t)n != VNET_HLEN + h->tp_len || h->tp_len - 12 - cut > WORK_CAP - 12 - ins)
		return -1;
	return (int)(h->tp_len - cut + ins);
}
