/* Benchmark generator: sends the frames of a file (one hex frame per line)
 * round robin on an interface through AF_PACKET, as fast as send() goes,
 * for SECONDS. usage: pktgen IFACE FRAMES.hex SECONDS  (prints frames sent) */
#include <arpa/inet.h>
#include <linux/if_packet.h>
#include <net/ethernet.h>
#include <net/if.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

static double now(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return t.tv_sec + t.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
	unsigned char frames[16][1600];
	int lens[16], n = 0, s, buf = 4 << 20;
	char line[4000];
	struct sockaddr_ll sll = { .sll_family = AF_PACKET };
	unsigned long sent = 0;
	FILE *f;
	double end;

	if (argc != 4 || !(f = fopen(argv[2], "r")))
		return 2;
	while (n < 16 && fgets(line, sizeof(line), f)) {
		int len = 0;
		for (char *p = line; p[0] && p[1] && p[0] != '\n'; p += 2)
			sscanf(p, "%2hhx", &frames[n][len++]);
		lens[n++] = len;
	}
	s = socket(AF_PACKET, SOCK_RAW, htons(ETH_P_ALL));
	sll.sll_ifindex = if_nametoindex(argv[1]);
	setsockopt(s, SOL_SOCKET, SO_SNDBUFFORCE, &buf, sizeof(buf));
	if (s < 0 || bind(s, (struct sockaddr *)&sll, sizeof(sll)) < 0)
		return perror("socket"), 1;
	end = now() + atof(argv[3]);
	while ((sent & 255) || now() < end)
		if (send(s, frames[sent % n], lens[sent % n], 0) > 0)
			sent++;
	printf("%lu\n", sent);
	return 0;
}
