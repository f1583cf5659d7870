// SPDX-License-Identifier: GPL-2.0
/*
 * The tracepoint reshaper:reshaper_frame (rs_trace.h), defined here and only
 * here; rs_frame.c fires it.
 */
#define CREATE_TRACE_POINTS
#include "rs_trace.h"
