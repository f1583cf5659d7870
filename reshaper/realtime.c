// SPDX-License-Identifier: GPL-2.0 OR MIT
/*
 * Locking the process's memory (realtime.h): with a real-time forwarding
 * thread, a page fault (a page swapped out, or touched for the first time)
 * would stall the data path for as long as the kernel takes to bring it in.
 */
#include <errno.h>
#include <sys/mman.h>

#include "realtime.h"

int rs_lock_memory(void)
{
	/* MCL_FUTURE: what is mapped later (buffers, thread stacks) is made resident when mapped */
	return mlockall(MCL_CURRENT | MCL_FUTURE) ? -errno : 0;
}

int rs_unlock_memory(void)
{
	return munlockall() ? -errno : 0;
}
