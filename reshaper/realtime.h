/* SPDX-License-Identifier: GPL-2.0 OR MIT */
/*
 * Locking the process's memory for `reshaper run --realtime` (bridge/realtime.py):
 * mlockall is not in Python's os module. Python sees this header through
 * reshaper/_ffi_build.py.
 */
#ifndef RS_REALTIME_H
#define RS_REALTIME_H

/* mlockall(MCL_CURRENT | MCL_FUTURE): every page mapped now or later stays resident; 0 or -errno. */
int rs_lock_memory(void);

/* munlockall(): undoes rs_lock_memory; 0 or -errno. */
int rs_unlock_memory(void);

#endif /* RS_REALTIME_H */
