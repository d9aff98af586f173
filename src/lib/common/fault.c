/* SPDX-License-Identifier: MIT */
/* fault.c - kill and pause points for the crash-safety tests (see fault.h) */
#include "config.h"

#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "common/fault.h"

static char kill_point[32], pause_point[32];
static long kill_countdown, pause_ms;
static int kill_sig = SIGKILL;
static pthread_once_t once = PTHREAD_ONCE_INIT;

/* "POINT=N..." into point; the text after '=' or NULL. */
static const char *split(const char *env, char *point, size_t size)
{
	const char *eq = env ? strchr(env, '=') : NULL;

	if (!eq || (size_t)(eq - env) >= size)
		return NULL;
	memcpy(point, env, (size_t)(eq - env));
	return eq + 1;
}

static int signal_named(const char *s)
{
	static const struct { const char *name; int sig; } sigs[] = {
		{ "KILL", SIGKILL }, { "INT", SIGINT }, { "TERM", SIGTERM },
		{ "HUP", SIGHUP },
	};

	for (size_t i = 0; i < sizeof(sigs) / sizeof(sigs[0]); i++)
		if (!strcmp(s, sigs[i].name))
			return sigs[i].sig;
	return SIGKILL;
}

static void parse(void)
{
	const char *v = split(getenv("DARE_STREAM_TEST_KILL"), kill_point,
			      sizeof(kill_point));
	char *end;

	if (v) {
		kill_countdown = strtol(v, &end, 10);
		if (*end == ':')
			kill_sig = signal_named(end + 1);
	}
	v = split(getenv("DARE_STREAM_TEST_PAUSE"), pause_point,
		  sizeof(pause_point));
	if (v)
		pause_ms = strtol(v, NULL, 10);
}

void ds_fault(const char *point)
{
	pthread_once(&once, parse);
	if (pause_point[0] && pause_ms > 0 && !strcmp(point, pause_point)) {
		struct timespec ts = { pause_ms / 1000,
				       pause_ms % 1000 * 1000000L };

		nanosleep(&ts, NULL);
	}
	if (kill_point[0] && !strcmp(point, kill_point) &&
	    --kill_countdown == 0)
		raise(kill_sig);
}
