/* The benchmarks' frame generator (one for every rate, on the host and inside the VM,
 * where trafgen does not run: it wants /dev/shm and sysctls the VM lacks).
 *
 *   generator IFACE FRAMES.hex SECONDS [PPS]
 *
 * Sends the frames of FRAMES.hex (one frame per line, hex, up to 16 frames of up to
 * 2048 bytes) round robin on IFACE through an AF_PACKET socket (qdisc bypassed, 4 MB
 * SO_SNDBUFFORCE), at PPS frames/s for SECONDS (PPS 0 or left out: as fast as
 * sendmmsg() goes). Pacing follows the monotonic clock: every wake-up sends the frames
 * that are due by then, up to a batch of 32 per sendmmsg(), and sleeps (or spins below
 * 50 us) until the next one is due, so a late wake-up is made up for with a short burst
 * rather than lost. Prints one JSON line: frames sent, send errors, seconds, achieved
 * rate, requested rate.
 * Built by bench/generator.py with gcc into ~/.cache/reshaper/bench (or a VM's share).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <linux/if_packet.h>
#include <net/ethernet.h>
#include <net/if.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <time.h>

#define MAXF 16
#define BATCH 32

static long long now_ns(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return t.tv_sec * 1000000000LL + t.tv_nsec;
}

int main(int argc, char **argv)
{
	static unsigned char frames[MAXF][2048];
	int lens[MAXF], n = 0, s, buf = 4 << 20, qdisc_bypass = 1;
	static char line[8192];
	struct sockaddr_ll sll = { .sll_family = AF_PACKET };
	struct mmsghdr msgs[BATCH];
	struct iovec iov[BATCH];
	unsigned long long sent = 0, errors = 0;
	long long start, end, t;
	double pps;
	FILE *f;

	if ((argc != 4 && argc != 5) || !(f = fopen(argv[2], "r"))) {
		fprintf(stderr, "usage: generator IFACE FRAMES.hex SECONDS [PPS]\n");
		return 2;
	}
	while (n < MAXF && fgets(line, sizeof(line), f)) {
		int len = 0;
		for (char *p = line; p[0] && p[1] && p[0] != '\n' && len < 2048; p += 2)
			sscanf(p, "%2hhx", &frames[n][len++]);
		if (len)
			lens[n++] = len;
	}
	fclose(f);
	if (!n)
		return 2;
	pps = argc == 5 ? atof(argv[4]) : 0;
	s = socket(AF_PACKET, SOCK_RAW, htons(ETH_P_ALL));
	sll.sll_ifindex = if_nametoindex(argv[1]);
	sll.sll_protocol = htons(ETH_P_ALL);
	if (s < 0 || bind(s, (struct sockaddr *)&sll, sizeof(sll)) < 0)
		return perror("socket"), 1;
	setsockopt(s, SOL_SOCKET, SO_SNDBUFFORCE, &buf, sizeof(buf));
	setsockopt(s, SOL_PACKET, PACKET_QDISC_BYPASS, &qdisc_bypass, sizeof(qdisc_bypass));
	memset(msgs, 0, sizeof(msgs));
	/* wake-ups on time, not up to the default 50 us late: a late one sends a burst, and a burst
	 * longer than a receive ring (veth's XDP ring holds 256 frames) is loss that pacing made */
	prctl(PR_SET_TIMERSLACK, 1UL, 0, 0, 0);
	start = now_ns();
	end = start + (long long)(atof(argv[3]) * 1e9);
	while ((t = now_ns()) < end) {
		unsigned long long due = pps > 0 ? (unsigned long long)((t - start) * pps / 1e9) + 1 : sent + BATCH;
		int k = 0, r;

		if (due <= sent) {
			long long next = start + (long long)((sent) * 1e9 / pps);
			long long wait = next - t;
			if (wait > 60000) {
				struct timespec ts = { 0, wait - 50000 };
				nanosleep(&ts, NULL);
			}
			continue;
		}
		while (k < BATCH && sent + k < due) {
			int i = (sent + k) % n;
			iov[k].iov_base = frames[i];
			iov[k].iov_len = lens[i];
			msgs[k].msg_hdr.msg_iov = &iov[k];
			msgs[k].msg_hdr.msg_iovlen = 1;
			k++;
		}
		r = sendmmsg(s, msgs, k, 0);
		if (r > 0) {
			sent += r;
		} else {
			/* ENOBUFS or EAGAIN: the device queue is full. The frame counts as not sent;
			 * skip it so that the schedule stays the offered rate, as a wire would. */
			errors++;
			if (pps > 0)
				sent++;
		}
	}
	t = now_ns();
	printf("{\"sent\": %llu, \"errors\": %llu, \"seconds\": %.6f, \"pps\": %.1f, \"requested_pps\": %.1f}\n",
	       sent - (pps > 0 ? errors : 0), errors, (t - start) / 1e9,
	       (sent - (pps > 0 ? errors : 0)) / ((t - start) / 1e9), pps);
	return 0;
}
