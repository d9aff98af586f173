#!/bin/sh
# SPDX-License-Identifier: MIT
# races.sh - a second merge into a running one's OUT; inputs rewritten
#
# A merge slowed by DARE_STREAM_TEST_PAUSE is running into OUT:
# - a second merge into OUT, plain, --resume or --force, is refused at
#   once (exit 4) naming the first one's pid, and the first completes
#   untouched; two merges started together: exactly one runs;
# - after a SIGKILL of the first, its lock file stays but is not held:
#   --resume is not blocked;
# - an input shard touched, chmod'ed, rewritten in place, truncated
#   (before or after it is read) or replaced by rename during the run: the
#   run fails (exit 3) before anything has a final name, naming the file
#   and what changed, and leaves OUT as it found it (nothing to resume:
#   the journal would not match the inputs); a rerun once the file is
#   whole gives the clean run's bytes.
# shellcheck source=lib.sh
. "${DS_TESTLIB:-$(dirname "$0")/lib.sh}"
ds_setup races

FX=$T/fx
mkfix "$FX" --models 2 --seed 5 --hidden 256 --vocab 1024 --layers 2 \
	--shards 4 --int-tensor
inputs_record "$FX"
ARGS="--method dare_ties -p 0.7 --seed 99 --memory 4M --threads 2 --quiet
      --base $FX/base --model $FX/ft1 --model $FX/ft2"
# shellcheck disable=SC2086
ds_merge "$T/clean" $ARGS || hard_error "the clean merge failed"
URING=pread
# shellcheck disable=SC2086
"$DS_BIN" merge -o "$T/probe" --io uring $ARGS 2>/dev/null && URING=uring

records_of() {
	if [ -f "$1/.dare-stream.journal" ]; then
		grep -Ec '^T [0-9]+ [0-9a-f]{16}$' "$1/.dare-stream.journal"
	else
		echo 0
	fi
}

# wait_records OUT N: until the journal of OUT lists N tensors (10 s max).
wait_records() {
	ds_i=0
	while [ "$(records_of "$1")" -lt "$2" ] && [ $ds_i -lt 200 ]; do
		sleep 0.05
		ds_i=$((ds_i + 1))
	done
	[ "$(records_of "$1")" -ge "$2" ]
}

# slow OUT ARGS...: a merge in the background, 40 ms per window; $pid.
slow() {
	ds_o=$1
	shift
	# shellcheck disable=SC2086
	DARE_STREAM_TEST_PAUSE=window=40 "$DS_BIN" merge -o "$ds_o" "$@" \
		>"$T/slow.out" 2>"$T/slow.err" &
	pid=$!
}

ms_since() { echo $((($(date +%s%N) - $1) / 1000000)); }

cases=0
say "== a second merge into a running merge's OUT"
# shellcheck disable=SC2086
slow "$T/busy" $ARGS
wait_records "$T/busy" 2 || fail "the first merge never journaled 2 tensors"
for extra in "" --resume --force "--force --seed 100"; do
	cases=$((cases + 1))
	t0=$(date +%s%N)
	# shellcheck disable=SC2086
	run_expect 4 "another merge is writing it \\(dare-stream pid $pid holds" \
		"$DS_BIN" merge -o "$T/busy" $ARGS $extra
	ms=$(ms_since "$t0")
	check "refused at once ($ms ms < 2000${extra:+, $extra})" [ "$ms" -lt 2000 ]
	check "the first merge still runs" kill -0 $pid
done
wait $pid
check "the first merge completes (exit $?)" [ $? -eq 0 ]
check "untouched by the refused ones: identical to the clean run" \
	diff -r "$T/clean" "$T/busy"
check "no lock file left once it is done" not [ -e "$T/busy/.dare-stream.lock" ]

say "== a merge into another OUT runs meanwhile"
cases=$((cases + 1))
# shellcheck disable=SC2086
slow "$T/a" $ARGS
# shellcheck disable=SC2086
ds_merge "$T/b" $ARGS
wait $pid
check "both complete (exit $?)" [ $? -eq 0 ]
check "both identical to the clean run" diff -r "$T/clean" "$T/a"
check "both identical to the clean run" diff -r "$T/clean" "$T/b"

say "== two merges started together into one fresh OUT: exactly one runs"
for i in 1 2 3 4 5; do
	cases=$((cases + 1))
	out=$T/together$i
	# shellcheck disable=SC2086
	DARE_STREAM_TEST_PAUSE=window=10 "$DS_BIN" merge -o "$out" $ARGS \
		2>"$T/t1.err" & p1=$!
	# shellcheck disable=SC2086
	DARE_STREAM_TEST_PAUSE=window=10 "$DS_BIN" merge -o "$out" $ARGS \
		2>"$T/t2.err" & p2=$!
	wait $p1; r1=$?
	wait $p2; r2=$?
	say "  exits $r1 and $r2"
	check "one succeeds, the other is refused (exit 4)" \
		[ $((r1 + r2)) -eq 4 ] && [ $((r1 * r2)) -eq 0 ]
	check "refused with the message of a busy OUT or of a non-empty one" \
		grep -Eq 'another merge is writing it|exists and is not empty|interrupted merge' \
		"$T/t1.err" "$T/t2.err"
	check "the output is the clean run's" diff -r "$T/clean" "$out"
done

say "== SIGKILL of a running merge: its lock does not block --resume"
cases=$((cases + 1))
# shellcheck disable=SC2086
slow "$T/killed" $ARGS
wait_records "$T/killed" 3 || fail "the merge never journaled 3 tensors"
kill -KILL $pid
wait $pid
check "killed (exit $?)" [ $? -eq 137 ]
check "its lock file is still there" [ -f "$T/killed/.dare-stream.lock" ]
check "naming its pid" grep -qx "$pid" "$T/killed/.dare-stream.lock"
t0=$(date +%s%N)
# shellcheck disable=SC2086
ds_merge "$T/killed" --resume $ARGS
check "resumed at once ($(ms_since "$t0") ms)" [ "$(ms_since "$t0")" -lt 5000 ]
check "identical to the clean run" diff -r "$T/clean" "$T/killed"

# ---- inputs changing under the merge -------------------------------------
# change NAME IO SHARD CMD EXPECT: on a copy of the fixture, run CMD (with
# $f the base's shard SHARD) once the run has journaled 2 tensors; the run
# must fail with EXPECT in its message.
change() {
	cases=$((cases + 1))
	say "== $1 ($2)"
	fx=$T/fx-$1-$2
	out=$T/out-$1-$2
	rm -rf "$fx"
	cp -a "$FX" "$fx"
	f=$fx/base/model-0000$3-of-00004.safetensors
	cp -p "$f" "$T/orig.safetensors"
	A="--method dare_ties -p 0.7 --seed 99 --memory 4M --threads 2 -q
	   --io $2 --base $fx/base --model $fx/ft1 --model $fx/ft2"
	# shellcheck disable=SC2086
	slow "$out" $A
	if ! wait_records "$out" 2; then
		fail "the run never journaled 2 tensors"
		kill -KILL $pid
		wait $pid
		return
	fi
	eval "$4"
	wait $pid
	ds_rc=$?
	cp "$T/slow.err" "$T/stderr"
	check "exit 3 (got $ds_rc)" [ "$ds_rc" -eq 3 ]
	stderr_has "names the file" "$f: input changed|$f: input removed"
	stderr_has "and what changed: $5" "$5"
	stderr_has "and that nothing has its final name" \
		"nothing was given its final name"
	no_output "$out"
	cp -p "$T/orig.safetensors" "$f"
	# shellcheck disable=SC2086
	ds_merge "$out" $A
	for s in 1 2 3 4; do
		n=model-0000$s-of-00004.safetensors
		check "rerun once whole: $n as in the clean run" \
			cmp "$T/clean/$n" "$out/$n"
	done
	rm -rf "$fx" "$out"
}

say "== inputs changed while a merge reads them"
for io in pread $URING; do
	change touch "$io" 2 'touch "$f"' 'modified \(mtime\)'
	change chmod "$io" 1 'chmod 600 "$f"' 'status changed \(ctime\)'
	change rewrite "$io" 3 \
		'printf "\000\000" | dd of="$f" bs=1 seek=4096 conv=notrunc 2>/dev/null' \
		'modified \(mtime\)'
	change truncate-read "$io" 1 'truncate -s 4096 "$f"' \
		'truncated from [0-9]+ to 4096 bytes'
	change truncate-unread "$io" 4 'truncate -s 4096 "$f"' \
		'truncated from [0-9]+ to 4096 bytes'
	change replace "$io" 3 'cp "$f" "$f.new" && mv "$f.new" "$f"' \
		'replaced by another file'
	change remove "$io" 4 'rm "$f"' 'input removed while the merge read it'
	[ "$io" = "$URING" ] && break
done

say "# $cases race cases"
ds_finish
