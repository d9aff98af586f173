/* SPDX-License-Identifier: MIT */
/* fault.c - kill points for the crash-safety tests (see fault.h) */
#include "config.h"

#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "common/fault.h"

static char kill_point[32];
static long kill_countdown;
static pthread_once_t once = PTHREAD_ONCE_INIT;

static void parse(void)
{
	const char *env = getenv("DARE_STREAM_TEST_KILL");
	const char *eq = env ? strchr(env, '=') : NULL;

	if (!eq || (size_t)(eq - env) >= sizeof(kill_point))
		return;
	memcpy(kill_point, env, (size_t)(eq - env));
	kill_countdown = strtol(eq + 1, NULL, 10);
}

void ds_fault(const char *point)
{
	pthread_once(&once, parse);
	if (kill_point[0] && !strcmp(point, kill_point) &&
	    --kill_countdown == 0)
		raise(SIGKILL);
}
