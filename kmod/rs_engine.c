// SPDX-License-Identifier: GPL-2.0 OR MIT
/*
 * The rule engine, built into the module from its one source file,
 * rules/engine/engine.c (found through the include path Kbuild sets). It is
 * its own object: it includes nothing of the kernel beyond rs_compat.h.
 */
#include "engine.c"
