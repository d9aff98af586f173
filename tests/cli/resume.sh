#!/bin/sh
# SPDX-License-Identifier: MIT
# resume.sh - SIGKILL at many points, then --resume: identical bytes
#
# DARE_STREAM_TEST_KILL=POINT=N makes the run kill itself (SIGKILL) the N-th
# time it passes POINT: early and late windows, mid-tensor, after a tensor
# is journaled, and between the renames of finalisation.  Each killed run
# must leave nothing that looks finished under a final name except complete
# files, refuse a plain rerun, and resume to the bytes of a clean run.
# shellcheck source=lib.sh
. "${DS_TESTLIB:-$(dirname "$0")/lib.sh}"
ds_setup resume

FX=$T/fx
say "== fixture: 4 shards, tensors of several windows at --memory 4M"
mkfix "$FX" --models 2 --seed 5 --hidden 256 --vocab 1024 --layers 2 \
	--shards 4 --int-tensor
inputs_record "$FX"
ARGS="--method dare_ties -p 0.7 --seed 99 --memory 4M --threads 2 --quiet
      --base $FX/base --model $FX/ft1 --model $FX/ft2"
# shellcheck disable=SC2086
ds_merge "$T/clean" $ARGS

# The complete shards of a run killed while renaming carry final names;
# before that point nothing may.
looks_unfinished() {
	if [ -e "$1/CHECKSUMS.xxh128" ]; then
		fail "killed run left CHECKSUMS.xxh128"
	else
		ok "killed run: no CHECKSUMS.xxh128"
	fi
}

for point in window=1 window=7 window=23 tensor=1 tensor=10 tensor=21 \
	finish=1 finish=3 finish=6; do
	out=$T/k-$point
	say "== kill at $point"
	# shellcheck disable=SC2086
	DARE_STREAM_TEST_KILL=$point run "$DS_BIN" merge -o "$out" $ARGS
	check "killed by SIGKILL (exit $ds_rc)" [ "$ds_rc" -eq 137 ]
	looks_unfinished "$out"
	case $point in
	finish=*) ;;
	*) no_output "$out" keep ;;
	esac
	# shellcheck disable=SC2086
	run_expect 4 'interrupted merge; use --resume' \
		"$DS_BIN" merge -o "$out" $ARGS
	# shellcheck disable=SC2086
	ds_merge "$out" --resume $ARGS
	check "resumed output identical to the clean run" diff -r "$T/clean" "$out"
done

say "== a resumed run keeps the tensors its journal lists, and only those"
# Killed as the 10th tensor is journaled: resuming verifies the 10 (the
# fixture has 22 with bytes) and writes the other 12.
out=$T/kept
# shellcheck disable=SC2086
DARE_STREAM_TEST_KILL=tensor=10 run "$DS_BIN" merge -o "$out" $ARGS
# shellcheck disable=SC2086
run_expect 0 "resuming .*: 10 of 22 tensors already written and verified" \
	"$DS_BIN" merge -o "$out" --resume $(echo $ARGS | sed 's/--quiet//')
check "kept and rewritten tensors: identical to the clean run" \
	diff -r "$T/clean" "$out"

say "== a journal of an earlier version is refused, not misread"
# shellcheck disable=SC2086
DARE_STREAM_TEST_KILL=tensor=10 run "$DS_BIN" merge -o "$T/v1" $ARGS
sed -i '1s/^dare-stream-journal 2 /dare-stream-journal 1 /' \
	"$T/v1/.dare-stream.journal"
# shellcheck disable=SC2086
run_expect 4 "journal version 1.*cannot resume; use --force" \
	"$DS_BIN" merge -o "$T/v1" --resume $ARGS
# shellcheck disable=SC2086
ds_merge "$T/v1" --force $ARGS
check "--force over it: identical to the clean run" diff -r "$T/clean" "$T/v1"

say "== a resumed run redoes a tensor whose bytes were damaged"
out=$T/damaged
# shellcheck disable=SC2086
DARE_STREAM_TEST_KILL=tensor=20 run "$DS_BIN" merge -o "$out" $ARGS
shard=$(ls "$out"/.model-00001-*.partial)
printf 'ZZZZ' | dd of="$shard" bs=1 seek=4096 conv=notrunc 2>/dev/null
# shellcheck disable=SC2086
ds_merge "$out" --resume $ARGS
check "damaged tensor rewritten: identical to the clean run" \
	diff -r "$T/clean" "$out"

say "== a different recipe does not continue (nor destroy) another's journal"
out=$T/other
# shellcheck disable=SC2086
DARE_STREAM_TEST_KILL=tensor=5 run "$DS_BIN" merge -o "$out" $ARGS
cp "$out/.dare-stream.journal" "$T/journal.before"
# shellcheck disable=SC2086
run_expect 4 'another recipe or other inputs' "$DS_BIN" merge -o "$out" \
	--resume $ARGS --seed 100
check "the interrupted merge's journal is untouched" \
	cmp "$T/journal.before" "$out/.dare-stream.journal"
# shellcheck disable=SC2086
ds_merge "$out" --force $ARGS --seed 100
# shellcheck disable=SC2086
ds_merge "$T/clean100" $ARGS --seed 100
check "seed 100 with --force over a seed 99 journal equals a clean run" \
	diff -r "$T/clean100" "$out"

say "== --force starts clean over an interrupted merge"
out=$T/forced
# shellcheck disable=SC2086
DARE_STREAM_TEST_KILL=window=5 run "$DS_BIN" merge -o "$out" $ARGS
# shellcheck disable=SC2086
ds_merge "$out" --force $ARGS
check "forced rerun identical to the clean run" diff -r "$T/clean" "$out"
check "no journal left" not [ -e "$out/.dare-stream.journal" ]

ds_finish
