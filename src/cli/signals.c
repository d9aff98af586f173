/* SPDX-License-Identifier: MIT */
/* signals.c - SIGINT, SIGTERM, SIGHUP stop a merge so that it can resume */
#include "config.h"

#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include "cli.h"

/*
 * The first signal asks the running merge to stop (ds_merge_cancel(): it
 * drains what is in flight, keeps its finished tensors and the journal,
 * and returns DS_E_CANCELED); a second one, for the impatient, takes the
 * default action, which leaves OUT as a SIGKILL would: still resumable.
 * The library's threads block signals, so the handler runs on the main
 * thread, which blocks them around the handle's release.
 */
static _Atomic(ds_merge *) current;
static atomic_int caught;
static const int handled[] = { SIGINT, SIGTERM, SIGHUP };

_Static_assert(ATOMIC_POINTER_LOCK_FREE == 2 && ATOMIC_INT_LOCK_FREE == 2,
	       "the handler may only touch lock-free atomics");

static void on_signal(int sig)
{
	ds_merge *mg = atomic_load(&current);
	int expected = 0;

	if (!atomic_compare_exchange_strong(&caught, &expected, sig)) {
		struct sigaction dfl = { .sa_handler = SIG_DFL };

		sigaction(sig, &dfl, NULL);
		raise(sig);
		return;
	}
	if (mg)
		ds_merge_cancel(mg);
}

void signals_install(void)
{
	struct sigaction sa = { .sa_handler = on_signal,
				.sa_flags = SA_RESTART };

	sigemptyset(&sa.sa_mask);
	for (size_t i = 0; i < sizeof(handled) / sizeof(handled[0]); i++) {
		struct sigaction old;

		/* A background job of a script (SIGINT) or nohup (SIGHUP)
		 * was told to ignore it: it still does. */
		if (sigaction(handled[i], NULL, &old) == 0 &&
		    old.sa_handler == SIG_IGN && handled[i] != SIGTERM)
			continue;
		sigaction(handled[i], &sa, NULL);
	}
}

static void block(int how)
{
	sigset_t set;

	sigemptyset(&set);
	for (size_t i = 0; i < sizeof(handled) / sizeof(handled[0]); i++)
		sigaddset(&set, handled[i]);
	pthread_sigmask(how, &set, NULL);
}

void signals_watch(ds_merge *mg)
{
	atomic_store(&current, mg);
	if (atomic_load(&caught))       /* arrived while planning */
		ds_merge_cancel(mg);
}

void signals_unwatch(void)
{
	block(SIG_BLOCK);
	atomic_store(&current, NULL);
	block(SIG_UNBLOCK);
}

int signals_caught(void)
{
	return atomic_load(&caught);
}

const char *signal_name(int sig)
{
	switch (sig) {
	case SIGINT: return "SIGINT";
	case SIGTERM: return "SIGTERM";
	case SIGHUP: return "SIGHUP";
	default: return "a signal";
	}
}

/* Is c safe unquoted in a POSIX shell word? */
static int plain(int c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
	       (c >= '0' && c <= '9') || strchr("_./,:=+-@%", c);
}

static void shell_word(const char *s, FILE *f)
{
	const char *p = s;

	while (*p && plain((unsigned char)*p))
		p++;
	if (*s && !*p) {
		fputs(s, f);
		return;
	}
	fputc('\'', f);
	for (p = s; *p; p++)
		fputs(*p == '\'' ? "'\\''" : (char[]){ *p, 0 }, f);
	fputc('\'', f);
}

void print_resume_hint(int argc, char **argv, const char *why)
{
	int has_resume = 0;

	fprintf(stderr, "dare-stream: %s: dare-stream", why);
	for (int i = 0; i < argc; i++) {
		fputc(' ', stderr);
		shell_word(argv[i], stderr);
		has_resume |= !strcmp(argv[i], "--resume");
	}
	fputs(has_resume ? "\n" : " --resume\n", stderr);
}
