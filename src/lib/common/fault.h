/* SPDX-License-Identifier: MIT */
/* fault.h - kill points for the crash-safety tests */
#ifndef DS_FAULT_H
#define DS_FAULT_H

/*
 * With DARE_STREAM_TEST_KILL=POINT=N in the environment, the N-th time the
 * run passes POINT the process sends itself SIGKILL, as a crash or an
 * out-of-memory kill would.  Points: "window" (a window written), "tensor"
 * (a tensor journaled), "finish" (a file renamed into place).  Without the
 * variable this costs one load and a branch.
 */
void ds_fault(const char *point);

#endif
