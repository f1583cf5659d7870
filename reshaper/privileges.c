// SPDX-License-Identifier: GPL-2.0 OR MIT
/*
 * Dropping privileges once a mode's sockets are open (privileges.h): every
 * mode calls it at start (bridge/appliance.py), before any other thread starts.
 */
#include <errno.h>
#include <string.h>
#include <unistd.h>
#include <sys/prctl.h>
#include <sys/syscall.h>

#include "privileges.h"

/*
 * Keeps only the capabilities in keep (a mask of CAP_* bits), in the
 * effective, permitted and bounding sets, and forbids regaining any.
 */
int rs_drop_capabilities(uint64_t keep)
{
	struct __user_cap_header_struct hdr = { .version = _LINUX_CAPABILITY_VERSION_3, .pid = 0 };
	struct __user_cap_data_struct data[2];
	int cap;

	/*
	 * The bounding set shrinks only with CAP_SETPCAP (a systemd unit's
	 * CapabilityBoundingSet usually leaves it out): then it stays as the
	 * unit made it, and the permitted set below is what counts.
	 */
	for (cap = 0; cap <= 63; cap++) {
		if (keep & (1ull << cap) || prctl(PR_CAPBSET_READ, cap, 0, 0, 0) <= 0)
			continue;
		if (prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) && errno != EPERM)
			return -errno;
	}
	memset(data, 0, sizeof(data));
	data[0].effective = data[0].permitted = (uint32_t)keep;
	data[1].effective = data[1].permitted = (uint32_t)(keep >> 32);
	if (syscall(SYS_capset, &hdr, data))
		return -errno;
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0))
		return -errno;
	return 0;
}
