/* rsctl: the armhf kernel-module test's only user-space program (static, no libc
 * beyond what glibc-static gives; the initramfs has busybox and this).
 *
 *   rsctl load PROGRAM.bin PORT_A PORT_B   RESHAPER_CMD_LOAD over generic netlink
 *   rsctl stats                            RESHAPER_CMD_GET_STATS: "a rx N tx N dropped N" ...
 *   rsctl send IFACE HEX COUNT             COUNT copies of a frame, AF_PACKET
 *   rsctl recv IFACE MILLISECONDS          incoming frames as hex, outer VLAN tag put
 *                                          back from PACKET_AUXDATA, one per line
 */
#include <arpa/inet.h>
#include <errno.h>
#include <linux/genetlink.h>
#include <linux/if_ether.h>
#include <linux/if_packet.h>
#include <linux/netlink.h>
#include <net/if.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "../../kmod/reshaper_genl.h"

static void die(const char *what) { perror(what); exit(1); }

/* ---------------------------------------------------------------- netlink */
struct req { struct nlmsghdr n; struct genlmsghdr g; char buf[65536]; };

static void put_attr(struct req *r, int type, const void *data, int len)
{
	struct nlattr *a = (struct nlattr *)((char *)&r->n + NLMSG_ALIGN(r->n.nlmsg_len));
	a->nla_type = type;
	a->nla_len = NLA_HDRLEN + len;
	memcpy((char *)a + NLA_HDRLEN, data, len);
	r->n.nlmsg_len = NLMSG_ALIGN(r->n.nlmsg_len) + NLA_ALIGN(a->nla_len);
}

static int nl_open(void)
{
	int fd = socket(AF_NETLINK, SOCK_RAW, NETLINK_GENERIC);
	struct sockaddr_nl sa = { .nl_family = AF_NETLINK };
	if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0)
		die("netlink");
	return fd;
}

/* sends r, receives into buf; returns length; an error ack exits with its errno.
 * flags: NLM_F_ACK (a command) or NLM_F_DUMP (GET_STATS, kmod/reshaper_genl.h: then buf
 * keeps the dump's first message, which holds the port counters) */
static int nl_talk(int fd, struct req *r, uint16_t family, int cmd, int flags, char *buf, int size)
{
	static uint32_t seq = 1;
	r->n.nlmsg_type = family;
	r->n.nlmsg_flags = NLM_F_REQUEST | flags;
	r->n.nlmsg_seq = seq++;
	r->g.cmd = cmd;
	r->g.version = RESHAPER_GENL_VERSION;
	if (send(fd, r, r->n.nlmsg_len, 0) < 0)
		die("send");
	int total = 0;
	for (;;) {
		int n = recv(fd, buf + total, size - total, 0);
		if (n < 0)
			die("recv");
		struct nlmsghdr *h = (struct nlmsghdr *)(buf + total);
		int got = n;
		for (; NLMSG_OK(h, n); h = NLMSG_NEXT(h, n)) {
			if (h->nlmsg_type == NLMSG_DONE) {
				int err = *(int *)NLMSG_DATA(h);
				if (err) {
					fprintf(stderr, "kernel refused: %s\n", strerror(-err));
					exit(2);
				}
				/* the first message, if any came before the end */
				return ((struct nlmsghdr *)buf)->nlmsg_type == NLMSG_DONE ? 0 : total ? total : got;
			}
			if (h->nlmsg_type == NLMSG_ERROR) {
				struct nlmsgerr *e = NLMSG_DATA(h);
				if (e->error) {
					fprintf(stderr, "kernel refused: %s\n", strerror(-e->error));
					exit(2);
				}
				/* the reply, if any, is the first message */
				return ((struct nlmsghdr *)buf)->nlmsg_type == NLMSG_ERROR ? 0 : total + got;
			}
		}
		if (!total || !(flags & NLM_F_DUMP))
			total += got;   /* keep the reply (a dump's first message), wait for the ack or the end */
	}
}

static struct nlattr *find_attr(struct nlmsghdr *h, int type)
{
	int len = h->nlmsg_len - NLMSG_LENGTH(GENL_HDRLEN);
	struct nlattr *a = (struct nlattr *)((char *)NLMSG_DATA(h) + GENL_HDRLEN);
	while (len >= (int)NLA_HDRLEN && a->nla_len >= NLA_HDRLEN && a->nla_len <= len) {
		if ((a->nla_type & NLA_TYPE_MASK) == type)
			return a;
		len -= NLA_ALIGN(a->nla_len);
		a = (struct nlattr *)((char *)a + NLA_ALIGN(a->nla_len));
	}
	return NULL;
}

static uint16_t family_id(int fd)
{
	static struct req r;
	static char buf[65536];
	memset(&r, 0, sizeof(r));
	r.n.nlmsg_len = NLMSG_LENGTH(GENL_HDRLEN);
	put_attr(&r, CTRL_ATTR_FAMILY_NAME, RESHAPER_GENL_NAME, sizeof(RESHAPER_GENL_NAME));
	int n = nl_talk(fd, &r, GENL_ID_CTRL, CTRL_CMD_GETFAMILY, NLM_F_ACK, buf, sizeof(buf));
	struct nlattr *a = n > 0 ? find_attr((struct nlmsghdr *)buf, CTRL_ATTR_FAMILY_ID) : NULL;
	if (!a) {
		fprintf(stderr, "no reshaper family (module not loaded?)\n");
		exit(1);
	}
	return *(uint16_t *)((char *)a + NLA_HDRLEN);
}

static int cmd_load(const char *file, const char *pa, const char *pb)
{
	static struct req r;
	static char prog[60000], buf[65536];
	FILE *f = fopen(file, "rb");
	if (!f)
		die(file);
	int len = fread(prog, 1, sizeof(prog), f);
	fclose(f);
	int fd = nl_open();
	uint16_t fam = family_id(fd);
	memset(&r, 0, sizeof(r));
	r.n.nlmsg_len = NLMSG_LENGTH(GENL_HDRLEN);
	put_attr(&r, RESHAPER_A_PROGRAM, prog, len);
	put_attr(&r, RESHAPER_A_PORT_A, pa, strlen(pa) + 1);
	put_attr(&r, RESHAPER_A_PORT_B, pb, strlen(pb) + 1);
	nl_talk(fd, &r, fam, RESHAPER_CMD_LOAD, NLM_F_ACK, buf, sizeof(buf));
	printf("loaded %d bytes\n", len);
	return 0;
}

static int cmd_stats(void)
{
	static struct req r;
	static char buf[65536];
	int fd = nl_open();
	uint16_t fam = family_id(fd);
	memset(&r, 0, sizeof(r));
	r.n.nlmsg_len = NLMSG_LENGTH(GENL_HDRLEN);
	int n = nl_talk(fd, &r, fam, RESHAPER_CMD_GET_STATS, NLM_F_DUMP, buf, sizeof(buf));
	if (n <= 0) {
		fprintf(stderr, "no stats reply\n");
		return 1;
	}
	struct nlmsghdr *h = (struct nlmsghdr *)buf;
	struct nlattr *len = find_attr(h, RESHAPER_A_PROGRAM_LEN);
	struct nlattr *ps = find_attr(h, RESHAPER_A_PORT_STATS);
	printf("program_len %u\n", len ? *(uint32_t *)((char *)len + NLA_HDRLEN) : 0);
	if (ps) {
		struct reshaper_port_stats s[2];
		memcpy(s, (char *)ps + NLA_HDRLEN, sizeof(s));
		for (int i = 0; i < 2; i++)
			printf("%c rx %llu tx %llu dropped %llu errors %llu\n", "ab"[i],
			       (unsigned long long)s[i].rx, (unsigned long long)s[i].tx,
			       (unsigned long long)s[i].dropped, (unsigned long long)s[i].errors);
	}
	return 0;
}

/* ---------------------------------------------------------------- frames */
static int packet_socket(const char *ifname, struct sockaddr_ll *sll)
{
	int fd = socket(AF_PACKET, SOCK_RAW, htons(ETH_P_ALL));
	if (fd < 0)
		die("AF_PACKET");
	memset(sll, 0, sizeof(*sll));
	sll->sll_family = AF_PACKET;
	sll->sll_protocol = htons(ETH_P_ALL);
	sll->sll_ifindex = if_nametoindex(ifname);
	if (!sll->sll_ifindex || bind(fd, (struct sockaddr *)sll, sizeof(*sll)) < 0)
		die(ifname);
	return fd;
}

static int cmd_send(const char *ifname, const char *hex, int count)
{
	static unsigned char frame[2048];
	struct sockaddr_ll sll;
	int len = strlen(hex) / 2, fd = packet_socket(ifname, &sll);
	for (int i = 0; i < len; i++)
		sscanf(hex + 2 * i, "%2hhx", &frame[i]);
	for (int i = 0; i < count; i++)
		if (send(fd, frame, len, 0) != len)
			die("send frame");
	printf("sent %d\n", count);
	return 0;
}

static int cmd_recv(const char *ifname, int ms)
{
	static unsigned char frame[2048 + 4];
	struct sockaddr_ll sll;
	int fd = packet_socket(ifname, &sll), one = 1;
	setsockopt(fd, SOL_PACKET, PACKET_AUXDATA, &one, sizeof(one));
	struct timespec t0, t;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	printf("listening\n");
	fflush(stdout);
	for (;;) {
		clock_gettime(CLOCK_MONOTONIC, &t);
		int left = ms - (int)((t.tv_sec - t0.tv_sec) * 1000 + (t.tv_nsec - t0.tv_nsec) / 1000000);
		struct pollfd p = { .fd = fd, .events = POLLIN };
		if (left <= 0 || poll(&p, 1, left) <= 0)
			break;
		char cbuf[CMSG_SPACE(sizeof(struct tpacket_auxdata))];
		struct iovec iov = { frame + 4, 2048 };
		struct sockaddr_ll from;
		struct msghdr m = { .msg_name = &from, .msg_namelen = sizeof(from), .msg_iov = &iov,
				    .msg_iovlen = 1, .msg_control = cbuf, .msg_controllen = sizeof(cbuf) };
		int n = recvmsg(fd, &m, 0);
		if (n < 0)
			die("recvmsg");
		if (from.sll_pkttype == PACKET_OUTGOING)
			continue;
		unsigned char *f = frame + 4;
		for (struct cmsghdr *c = CMSG_FIRSTHDR(&m); c; c = CMSG_NXTHDR(&m, c)) {
			struct tpacket_auxdata *aux = (void *)CMSG_DATA(c);
			if (c->cmsg_level != SOL_PACKET || c->cmsg_type != PACKET_AUXDATA)
				continue;
			if (aux->tp_status & TP_STATUS_VLAN_VALID) {
				uint16_t tpid = (aux->tp_status & TP_STATUS_VLAN_TPID_VALID) ? aux->tp_vlan_tpid : ETH_P_8021Q;
				memmove(frame, frame + 4, 12);
				f = frame;
				f[12] = tpid >> 8; f[13] = tpid & 0xff;
				f[14] = aux->tp_vlan_tci >> 8; f[15] = aux->tp_vlan_tci & 0xff;
				n += 4;
			}
		}
		printf("frame ");
		for (int i = 0; i < n; i++)
			printf("%02x", f[i]);
		printf("\n");
		fflush(stdout);
	}
	return 0;
}

int main(int argc, char **argv)
{
	if (argc == 5 && !strcmp(argv[1], "load"))
		return cmd_load(argv[2], argv[3], argv[4]);
	if (argc == 2 && !strcmp(argv[1], "stats"))
		return cmd_stats();
	if (argc == 5 && !strcmp(argv[1], "send"))
		return cmd_send(argv[2], argv[3], atoi(argv[4]));
	if (argc == 4 && !strcmp(argv[1], "recv"))
		return cmd_recv(argv[2], atoi(argv[3]));
	fprintf(stderr, "usage: rsctl load PROG A B | stats | send IF HEX N | recv IF MS\n");
	return 2;
}
