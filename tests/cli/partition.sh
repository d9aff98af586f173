#!/bin/sh
# SPDX-License-Identifier: MIT
# partition.sh - merge --partition K/N in N processes, then finalize: the
# bytes of one process's merge; each refusal of finalize with its message
#
# The reference is a single-process merge of the same recipe into another
# directory; after the parts and finalize, `diff -r` must find no
# difference at all (every shard, the index, CHECKSUMS.xxh128,
# dare-stream.yml, the copied files, and no part file left behind).
# shellcheck source=lib.sh
. "${DS_TESTLIB:-$(dirname "$0")/lib.sh}"
ds_setup partition

FX=$T/fx
say "== fixture: uneven shards (--shard-size 100K over tensors of 32K..130K)"
mkfix "$FX" --models 2 --seed 7 --hidden 128 --vocab 512 --layers 3 \
	--shards 2 --int-tensor
inputs_record "$FX"
ARGS="--method dare_ties -p 0.5 --seed 11 --threads 1 --quiet
      --base $FX/base --model $FX/ft1 --model $FX/ft2"
# shellcheck disable=SC2086
ds_merge "$T/whole" $ARGS --shard-size 100K
# count_shards DIR: its .safetensors files.
count_shards() {
	c_n=0
	for c_f in "$1"/*.safetensors; do
		[ -e "$c_f" ] && c_n=$((c_n + 1))
	done
	echo "$c_n"
}
nshards=$(count_shards "$T/whole")
check "the reference has many shards ($nshards)" [ "$nshards" -gt 10 ]
# shellcheck disable=SC2086
ds_merge "$T/whole-base" $ARGS
check "the base's layout: 2 shards" \
	[ "$(count_shards "$T/whole-base")" -eq 2 ]

# parts OUT N [OPTION...]: the N parts as N processes at once.
parts() {
	p_out=$1
	p_n=$2
	shift 2
	p_k=0
	p_pids=
	while [ "$p_k" -lt "$p_n" ]; do
		# shellcheck disable=SC2086
		"$DS_BIN" merge -o "$p_out" $ARGS "$@" --partition "$p_k/$p_n" \
			>"$T/part-$p_k.log" 2>&1 &
		p_pids="$p_pids $!"
		p_k=$((p_k + 1))
	done
	p_bad=0
	for p_pid in $p_pids; do
		wait "$p_pid" || p_bad=$((p_bad + 1))
	done
	if [ "$p_bad" -eq 0 ]; then
		ok "$p_n parts into $(basename "$p_out") at once"
	else
		fail "$p_bad of $p_n parts failed"
		cat "$T"/part-*.log
	fi
	rm -f "$T"/part-*.log
}

# one_part OUT K/N [OPTION...]: one part, in the foreground.
one_part() {
	o_out=$1
	o_kn=$2
	shift 2
	# shellcheck disable=SC2086
	ds_merge "$o_out" $ARGS "$@" --partition "$o_kn"
}

finalize_ok() {
	run "$DS_BIN" finalize "$1"
	if [ "$ds_rc" -eq 0 ]; then
		ok "finalize $(basename "$1")"
	else
		fail "finalize $(basename "$1") exited $ds_rc"
		show_output
	fi
}

# Nothing that looks finished: no index, no checksums.
not_finalized() {
	if [ -e "$1/CHECKSUMS.xxh128" ] ||
		[ -e "$1/model.safetensors.index.json" ]; then
		fail "a refused finalize wrote the index or CHECKSUMS.xxh128"
	else
		ok "refused: no index, no CHECKSUMS.xxh128"
	fi
}

for n in 1 2 3 7; do
	say "== $n parts at once, then finalize"
	parts "$T/p$n" "$n" --shard-size 100K
	finalize_ok "$T/p$n"
	check "$n parts + finalize: identical to one process" \
		diff -r "$T/whole" "$T/p$n"
done
xxh_check "$T/p3"
run_expect 0 '' "$DS_BIN" verify "$T/p7"

say "== --force over a directory with stale files: they go, as for one process"
mkdir "$T/stale"
echo old >"$T/stale/notes.txt"
echo old >"$T/stale/CHECKSUMS.xxh128"
parts "$T/stale" 3 --shard-size 100K --force
check "no part left CHECKSUMS.xxh128 meanwhile" \
	not [ -e "$T/stale/CHECKSUMS.xxh128" ]
finalize_ok "$T/stale"
check "forced parts + finalize: identical to one process" \
	diff -r "$T/whole" "$T/stale"

say "== more parts (5) than shards (2): the empty parts still count"
parts "$T/wide" 5
check "parts without a shard left a manifest" \
	[ -e "$T/wide/.dare-stream.part-4-of-5.json" ]
finalize_ok "$T/wide"
check "5 parts of 2 shards: identical to one process" \
	diff -r "$T/whole-base" "$T/wide"

say "== the order the parts end in does not matter"
for k in 2 1 0; do
	one_part "$T/rev" "$k/3" --shard-size 100K
done
finalize_ok "$T/rev"
check "parts in reverse order: identical" diff -r "$T/whole" "$T/rev"

say "== the share is balanced by bytes"
# 17 shards over 3 parts, largest first onto the lightest: no part has
# more than the mean plus the largest shard.
parts "$T/bal" 3 --shard-size 100K
total=0
max=0
for k in 0 1 2; do
	b=$(sed -n 's/^ *"size": \([0-9]*\),*$/\1/p' \
		"$T/bal/.dare-stream.part-$k-of-3.json" | awk '{s += $1} END {print s}')
	total=$((total + b))
	[ "$b" -gt "$max" ] && max=$b
done
check "heaviest part $max <= total/3 + largest shard" \
	[ "$max" -le $((total / 3 + 131232 + 5000)) ]

say "== refused: a missing part"
one_part "$T/miss" 0/3 --shard-size 100K
one_part "$T/miss" 2/3 --shard-size 100K
run_expect 5 'part 1 of 3 missing: no .*/\.dare-stream\.part-1-of-3\.json' \
	"$DS_BIN" finalize "$T/miss"
not_finalized "$T/miss"
one_part "$T/miss" 1/3 --shard-size 100K
finalize_ok "$T/miss"
check "the missing part run later: identical" diff -r "$T/whole" "$T/miss"

say "== refused: a duplicated part"
parts "$T/dup" 3 --shard-size 100K
cp "$T/dup/.dare-stream.part-0-of-3.json" "$T/dup/.dare-stream.part-1-of-3.json"
run_expect 5 'part-1-of-3\.json: is the manifest of part 0 of 3.*duplicated' \
	"$DS_BIN" finalize "$T/dup"
not_finalized "$T/dup"

say "== refused: a foreign part (another recipe's, another N's)"
parts "$T/fa" 2 --shard-size 100K
# shellcheck disable=SC2086
"$DS_BIN" merge -o "$T/fb" $ARGS --shard-size 100K --seed 12 \
	--partition 1/2 >/dev/null 2>&1
cp "$T/fb/.dare-stream.part-1-of-2.json" "$T/fa/"
run_expect 5 'part 1 of 2 \(.*part-1-of-2\.json\) is foreign' \
	"$DS_BIN" finalize "$T/fa"
not_finalized "$T/fa"
parts "$T/fc" 2 --shard-size 100K
one_part "$T/p3x" 2/3 --shard-size 100K
cp "$T/p3x/.dare-stream.part-2-of-3.json" "$T/fc/"
run_expect 5 'part-2-of-3\.json: a part of a merge in 3 parts, the others. is in 2' \
	"$DS_BIN" finalize "$T/fc"
not_finalized "$T/fc"
# shellcheck disable=SC2086
run_expect 4 'part of another partitioned merge' \
	"$DS_BIN" merge -o "$T/fb" $ARGS --shard-size 100K --partition 0/2

say "== refused: an unfinished part (killed -9), then --resume it"
one_part "$T/kill" 0/2 --shard-size 100K
# shellcheck disable=SC2086
DARE_STREAM_TEST_KILL=tensor=4 run "$DS_BIN" merge -o "$T/kill" $ARGS \
	--shard-size 100K --partition 1/2
check "part 1 killed by SIGKILL (exit $ds_rc)" [ "$ds_rc" -eq 137 ]
run_expect 5 'part 1 of 2 is unfinished: .*\.dare-stream\.1-of-2\.journal without .*part-1-of-2\.json' \
	"$DS_BIN" finalize "$T/kill"
not_finalized "$T/kill"
one_part "$T/kill" 1/2 --shard-size 100K --resume
finalize_ok "$T/kill"
check "killed, resumed, finalized: identical" diff -r "$T/whole" "$T/kill"

say "== a part killed -9 while renaming its shards, then --resume"
# shellcheck disable=SC2086
DARE_STREAM_TEST_KILL=finish=2 run "$DS_BIN" merge -o "$T/ren" $ARGS \
	--shard-size 100K --partition 0/2
check "part 0 killed by SIGKILL (exit $ds_rc)" [ "$ds_rc" -eq 137 ]
one_part "$T/ren" 1/2 --shard-size 100K
run_expect 5 'part 0 of 2 is unfinished' "$DS_BIN" finalize "$T/ren"
not_finalized "$T/ren"
one_part "$T/ren" 0/2 --shard-size 100K --resume
finalize_ok "$T/ren"
check "killed while renaming, resumed: identical" diff -r "$T/whole" "$T/ren"

if have_python; then
	say "== refused: a part still running (its lock held by a process)"
	parts "$T/busy" 2 --shard-size 100K
	"$PYTHON3" -c '
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o644)
os.write(fd, b"%d\n" % os.getpid())
fcntl.lockf(fd, fcntl.LOCK_EX)
print(os.getpid(), flush=True)
time.sleep(60)' "$T/busy/.dare-stream.1-of-2.lock" >"$T/holder" &
	holder=$!
	i=0
	while [ ! -s "$T/holder" ] && [ $i -lt 100 ]; do
		sleep 0.1
		i=$((i + 1))
	done
	run_expect 5 "part 1 of 2 is unfinished: pid $holder holds" \
		"$DS_BIN" finalize "$T/busy"
	not_finalized "$T/busy"
	# shellcheck disable=SC2086
	run_expect 4 "pid $holder holds .*\.dare-stream\.1-of-2\.lock" \
		"$DS_BIN" merge -o "$T/busy" $ARGS --shard-size 100K \
		--partition 1/2
	kill "$holder"
	wait "$holder" 2>/dev/null
	finalize_ok "$T/busy"
	check "after the holder ended: identical" diff -r "$T/whole" "$T/busy"

	# hold LOCK FILE MODE: a process holding FILE's lock (ex or sh)
	hold() {
		rm -f "$T/holder"
		"$PYTHON3" -c '
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o644)
if sys.argv[2] == "ex":
    os.write(fd, b"%d\n" % os.getpid())
fcntl.lockf(fd, fcntl.LOCK_EX if sys.argv[2] == "ex" else fcntl.LOCK_SH)
print(os.getpid(), flush=True)
time.sleep(60)' "$1" "$2" >"$T/holder" &
		holder=$!
		i=0
		while [ ! -s "$T/holder" ] && [ $i -lt 100 ]; do
			sleep 0.1
			i=$((i + 1))
		done
	}
	say "== a whole merge while parts run, and parts while a whole merge runs"
	mkdir "$T/both"
	hold "$T/both/.dare-stream.lock" sh
	# shellcheck disable=SC2086
	run_expect 4 'the parts of a partitioned merge are writing it' \
		"$DS_BIN" merge -o "$T/both" $ARGS
	kill "$holder"
	wait "$holder" 2>/dev/null
	hold "$T/both/.dare-stream.lock" ex
	# shellcheck disable=SC2086
	run_expect 4 "pid $holder holds" \
		"$DS_BIN" merge -o "$T/both" $ARGS --partition 0/2
	kill "$holder"
	wait "$holder" 2>/dev/null
fi

say "== refused: a shard changed after its part wrote it"
parts "$T/bad" 2 --shard-size 100K
printf 'Z' | dd of="$T/bad/model-00005-of-00017.safetensors" bs=1 seek=5000 \
	conv=notrunc 2>/dev/null
run_expect 5 'model-00005-of-00017\.safetensors \(part [01] of 2\): xxh128 [0-9a-f]{32}, its part.s manifest recorded' \
	"$DS_BIN" finalize "$T/bad"
not_finalized "$T/bad"
truncate -s 100 "$T/bad/model-00002-of-00017.safetensors"
cp "$T/whole/model-00005-of-00017.safetensors" "$T/bad/"
run_expect 5 'model-00002-of-00017\.safetensors \(part [01] of 2\): 100 bytes, its part.s manifest says' \
	"$DS_BIN" finalize "$T/bad"
not_finalized "$T/bad"

say "== bad --partition values"
for v in 3/3 -1/2 0/0 1/x 1 /2 1/ 1/2/3; do
	# shellcheck disable=SC2086
	run_expect 2 "--partition $v: " "$DS_BIN" merge -o "$T/never" $ARGS \
		--partition "$v"
done
run_expect 2 'K must be less than N' "$DS_BIN" merge -o "$T/never" \
	--base "$FX/base" --model "$FX/ft1" --partition 3/3
run_expect 2 'at least 1' "$DS_BIN" merge -o "$T/never" \
	--base "$FX/base" --model "$FX/ft1" --partition 0/0
check "no output made for a bad --partition" not [ -e "$T/never" ]

say "== what a part refuses, and a whole merge over parts"
mkdir "$T/other"
echo hello >"$T/other/notes.txt"
# shellcheck disable=SC2086
run_expect 4 'not empty and holds no part of this partitioned merge' \
	"$DS_BIN" merge -o "$T/other" $ARGS --partition 0/2
# shellcheck disable=SC2086
run_expect 4 'holds a finished merge' \
	"$DS_BIN" merge -o "$T/p2" $ARGS --shard-size 100K --partition 0/2
one_part "$T/half" 0/2 --shard-size 100K
# shellcheck disable=SC2086
run_expect 4 'not empty' "$DS_BIN" merge -o "$T/half" $ARGS --shard-size 100K
# shellcheck disable=SC2086
ds_merge "$T/half" $ARGS --shard-size 100K --force
check "a whole merge with --force over a part: identical, no part left" \
	diff -r "$T/whole" "$T/half"

say "== finalize with nothing to join"
run_expect 0 '' "$DS_BIN" finalize "$T/whole"
check "finished merge: 'nothing to finalize'" grep -q 'nothing to finalize' \
	"$T/stdout"
mkdir "$T/empty"
run_expect 4 'nothing to finalize' "$DS_BIN" finalize "$T/empty"
run_expect 2 'finalize needs an output directory' "$DS_BIN" finalize

ds_finish
