// SPDX-License-Identifier: GPL-2.0 OR MIT
/*
 * Switching a port interface's GRO, GSO and TSO with the ethtool ioctl
 * (offloads.h). An AF_INET socket carries the ioctl: deploy/beaglebone's unit
 * allows that family for it.
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <linux/ethtool.h>
#include <linux/sockios.h>
#include <net/if.h>
#include <sys/ioctl.h>
#include <sys/socket.h>

#include "offloads.h"

/* each offload's bit and its ethtool commands, in the order they are switched */
static const struct {
	int bit;
	uint32_t get, set;
} offload_cmds[] = {
	{ RS_OFFLOAD_GRO, ETHTOOL_GGRO, ETHTOOL_SGRO },
	{ RS_OFFLOAD_GSO, ETHTOOL_GGSO, ETHTOOL_SGSO },
	{ RS_OFFLOAD_TSO, ETHTOOL_GTSO, ETHTOOL_STSO },
};

static int ethtool_value(int fd, const char *ifname, uint32_t cmd, uint32_t *value)
{
	struct ethtool_value ev = { .cmd = cmd, .data = *value };
	struct ifreq ifr;

	memset(&ifr, 0, sizeof(ifr));
	snprintf(ifr.ifr_name, sizeof(ifr.ifr_name), "%s", ifname);
	ifr.ifr_data = (void *)&ev;
	if (ioctl(fd, SIOCETHTOOL, &ifr))
		return -errno;
	*value = ev.data;
	return 0;
}

int rs_set_offloads(const char *ifname, int features, int on)
{
	int fd = socket(AF_INET, SOCK_DGRAM, 0), prev = 0, rc = 0;
	size_t i;

	if (fd < 0)
		return -errno;
	for (i = 0; i < sizeof(offload_cmds) / sizeof(offload_cmds[0]); i++) {
		uint32_t v = 0;

		if (!(features & offload_cmds[i].bit))
			continue;
		if (ethtool_value(fd, ifname, offload_cmds[i].get, &v) == 0 && v)
			prev |= offload_cmds[i].bit;
		v = on ? 1 : 0;
		/* a device without the feature refuses: not an error for us */
		if ((rc = ethtool_value(fd, ifname, offload_cmds[i].set, &v)) && rc != -EOPNOTSUPP && rc != -EINVAL)
			break;
		rc = 0;
	}
	close(fd);
	return rc ? rc : prev;
}
