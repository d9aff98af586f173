#!/bin/sh
# SPDX-License-Identifier: MIT
# sigpipe.sh - inspect | head -n 1: nothing on stderr, exit 0
#
# Whether SIGPIPE comes in as default or ignored, text or --json; a write
# error other than a closed pipe (/dev/full) is still reported, exit 1.
# Functions run through check look unreachable to shellcheck.
# shellcheck disable=SC2317
# shellcheck source=lib.sh
. "${DS_TESTLIB:-$(dirname "$0")/lib.sh}"
ds_setup sigpipe
need_python
say "== inspect | head -n 1: quiet, exit 0"
mkfix "$T/fx" --models 1 --layers 8 --seed 61
# Thirty times the model: far more than a pipe holds, so head leaves first.
set --
for _ in $(seq 30); do set -- "$@" "$T/fx/base"; done
# pipe_run DISPOSITION OPTION PATH...: inspect [OPTION] PATH... into
# head -n 1; DISPOSITION is "default" or "ignored" (SIGPIPE as the parent
# leaves it); stdout, stderr and exit status in $T/pipe.out, .err, .rc.
pipe_run() {
	ds_trap=
	[ "$1" = ignored ] && ds_trap="trap '' PIPE;"
	ds_opt=$2
	shift 2
	# shellcheck disable=SC2086 # $ds_opt is empty or one word
	sh -c "$ds_trap"' b=$1; shift; o=$1; shift
		{ "$b" inspect $o "$@" 2>"$0.err"; echo $? >"$0.rc"; } |
		head -n 1 >"$0.out"' "$T/pipe" "$DS_BIN" "$ds_opt" "$@"
}
for disp in default ignored; do
	for opt in "" --json; do
		pipe_run "$disp" "$opt" "$@"
		what="SIGPIPE $disp${opt:+, $opt}"
		check "$what: head got the first line" test -s "$T/pipe.out"
		check "$what: nothing on stderr" not test -s "$T/pipe.err"
		check "$what: inspect exits 0 (got $(cat "$T/pipe.rc"))" \
			test "$(cat "$T/pipe.rc")" = 0
		[ -s "$T/pipe.err" ] && sed 's/^/  ! /' "$T/pipe.err"
	done
done
# A write error other than a closed pipe is still an error.
if [ -w /dev/full ]; then
	"$DS_BIN" inspect "$T/fx/base" >/dev/full 2>"$T/full.err"
	ds_full=$?
	check "stdout on a full disk: exit 1 (got $ds_full)" test "$ds_full" = 1
	check "stdout on a full disk: the message says so" \
		grep -q 'standard output: No space left on device' "$T/full.err"
fi

ds_finish
