/* SPDX-License-Identifier: MIT */
/* fault.h - kill points for the crash-safety tests */
#ifndef DS_FAULT_H
#define DS_FAULT_H

/*
 * With DARE_STREAM_TEST_KILL=POINT=N in the environment, the N-th time the
 * run passes POINT the process sends itself SIGKILL, as a crash or an
 * out-of-memory kill would; POINT=N:INT (TERM, HUP) sends that signal
 * instead, as a user or a scheduler would, at an exact point.  Points:
 * "window" (a window written), "tensor" (a tensor journaled), "finish" (a
 * file renamed into place).  DARE_STREAM_TEST_PAUSE=POINT=MS sleeps MS
 * milliseconds at every pass of POINT, so that a test can act on a run
 * that is still going (a second merge, a signal, an input rewritten).
 * Without the variables this costs one load and a branch.
 */
void ds_fault(const char *point);

#endif
