#!/bin/sh
# SPDX-License-Identifier: MIT
# faults.sh - an I/O error at each of many points ends the run cleanly
#
# tests/faultshim.so (LD_PRELOAD) makes the N-th open, pread, pwrite,
# write, fsync, fallocate, rename or close on a matching path fail with a
# given errno, or transfer half and then end (a short read at end of file,
# a short write and then ENOSPC).  The merge uses the pread backend, whose
# calls the shim sees; io_uring's are covered by uring-faults.sh.
#
# Each point: the fault was injected (the shim says where); exit 1 (3 for
# a header cut short); the message names that file and the error; nothing
# that looks finished, no temporary but the journal and the shards holding
# the tensors it lists; no lock left; inputs unchanged; then --resume
# without the fault continues from every kept tensor and gives the bytes
# of a clean run.  Transient errors (EINTR, EAGAIN) are retried: the run
# succeeds with the same bytes.
# shellcheck source=lib.sh
. "${DS_TESTLIB:-$(dirname "$0")/lib.sh}"
ds_setup faults

SHIM=${DS_FAULTSHIM:-$(dirname "$DS_MKFIXTURE")/.libs/faultshim.so}
[ -f "$SHIM" ] || hard_error "fault shim '$SHIM' missing"
# Under AddressSanitizer the shim comes before its runtime in the list.
ASAN_OPTIONS=${ASAN_OPTIONS:+$ASAN_OPTIONS:}verify_asan_link_order=0
export ASAN_OPTIONS
LD_PRELOAD=$SHIM true 2>/dev/null || skip_all "LD_PRELOAD does not work here"

FX=$T/fx
say "== fixture: 3 models of 4 shards, tensors of several windows at 4M"
mkfix "$FX" --models 2 --seed 5 --hidden 256 --vocab 1024 --layers 2 \
	--shards 4 --int-tensor
inputs_record "$FX"
ARGS="--method dare_ties -p 0.7 --seed 99 --memory 4M --threads 2 --io pread
      --base $FX/base --model $FX/ft1 --model $FX/ft2"
# shellcheck disable=SC2086
ds_merge "$T/clean" --quiet $ARGS || hard_error "the clean merge failed"
# Tensors of the output, from its index (for the resume notice).
NT=$(sed -n '/"weight_map"/,/}/p' "$T/clean/model.safetensors.index.json" |
	grep -c '": "model-')
[ "$NT" -gt 10 ] || hard_error "cannot count the tensors of the clean merge"

rm -f "$T/calls"
# shellcheck disable=SC2086
DS_FAULT_CALL=pread DS_FAULT_PATH="$FX/*" DS_FAULT_NTH=0 \
	DS_FAULT_LOG=$T/calls LD_PRELOAD=$SHIM \
	"$DS_BIN" merge -q -o "$T/count" $ARGS >/dev/null 2>&1
[ -s "$T/calls" ] || skip_all "the shim does not see dare-stream's pread"
say "# $(wc -l <"$T/calls") reads of the inputs in a clean run"

# The text of each injected error, as strerror(3) gives it.
err_text() {
	case $1 in
	EIO) echo 'Input/output error' ;;
	ENOSPC) echo 'No space left on device' ;;
	EFBIG) echo 'File too large' ;;
	EROFS) echo 'Read-only file system' ;;
	EACCES) echo 'Permission denied' ;;
	EMFILE) echo 'Too many open files' ;;
	SHORT)
		case $2 in
		pread) echo 'shorter than its header says|shrank while its header' ;;
		*) echo 'No space left on device' ;;
		esac ;;
	esac
}

# The name a message gives the file at PATH: its directory's name and its
# own, a temporary by its temporary or its final name.
name_re() {
	ds_d=$(basename "$(dirname "$1")")
	ds_b=$(basename "$1")
	ds_b=${ds_b#.}
	ds_b=${ds_b%.partial}
	printf '%s/\\.?%s(\\.partial)?' "$ds_d" "$(printf '%s' "$ds_b" |
		sed 's/[.]/\\./g')"
}

# What a failed run may leave in OUT: the journal, and shard temporaries
# only when the journal lists tensors; nothing finished-looking, no lock.
leftovers() {
	records=0
	[ -f "$1/.dare-stream.journal" ] &&
		records=$(grep -Ec '^T [0-9]+ [0-9a-f]{16}$' \
			"$1/.dare-stream.journal")
	if [ "$records" -eq 0 ]; then
		no_output "$1"
		return
	fi
	no_output "$1" keep
	ds_extra=$(ls -A "$1" | grep -v -e '^\.dare-stream\.journal$' \
		-e '^\.model-0000[1-4]-of-00004\.safetensors\.partial$')
	check "only the journal and $records tensors' shards kept${ds_extra:+ (also: $ds_extra)}" \
		[ -z "$ds_extra" ]
}

points=0
# inject CALL PATTERN N ERRNO EXIT: one injection point.
inject() {
	points=$((points + 1))
	out=$T/out$points
	say "== point $points: $1 #$3 on ${2#"$T"/} fails with $4"
	rm -f "$T/fired"
	# shellcheck disable=SC2086
	DS_FAULT_CALL=$1 DS_FAULT_PATH=$2 DS_FAULT_NTH=$3 DS_FAULT_ERRNO=$4 \
		DS_FAULT_REPORT=$T/fired LD_PRELOAD=$SHIM \
		run "$DS_BIN" merge -q -o "$out" $ARGS
	if [ ! -s "$T/fired" ]; then
		fail "the fault was never injected (exit $ds_rc)"
		return
	fi
	fired=$(cut -d' ' -f2- "$T/fired")
	say "  injected at ${fired#"$T"/}"
	check "exit $5 (got $ds_rc)" [ "$ds_rc" -eq "$5" ]
	stderr_has "the message names ${fired#"$T"/}" "$(name_re "$fired")"
	stderr_has "and the error: $(err_text "$4" "$1")" "$(err_text "$4" "$1")"
	check "nothing left locked" not [ -e "$out/.dare-stream.lock" ]
	leftovers "$out"
	[ "$records" -gt 0 ] && stderr_has "says how to continue" \
		"continue with: .*dare-stream merge .* --resume\$"
	inputs_verify
	# shellcheck disable=SC2086
	ds_merge "$out" --resume $ARGS
	[ "$records" -gt 0 ] && stderr_has "resumed from the $records kept tensors" \
		"resuming .*: $records of $NT tensors"
	check "resumed output identical to the clean run" diff -r "$T/clean" "$out"
	rm -rf "$out"
}

# transient CALL PATTERN N ERRNO: retried; the run succeeds, same bytes.
transient() {
	points_t=$((${points_t:-0} + 1))
	say "== transient: $1 #$3 on ${2#"$T"/} fails with $4"
	rm -f "$T/fired"
	# shellcheck disable=SC2086
	DS_FAULT_CALL=$1 DS_FAULT_PATH=$2 DS_FAULT_NTH=$3 DS_FAULT_ERRNO=$4 \
		DS_FAULT_REPORT=$T/fired LD_PRELOAD=$SHIM \
		run "$DS_BIN" merge -q -o "$T/out-tr" $ARGS
	check "injected" [ -s "$T/fired" ]
	check "retried: exit 0 (got $ds_rc)" [ "$ds_rc" -eq 0 ]
	check "identical to the clean run" diff -r "$T/clean" "$T/out-tr"
	rm -rf "$T/out-tr"
}

IN="$FX/*.safetensors"
say "== reads of the inputs: headers (plan), tensor data, copied files"
for n in 1 2 7 16 24; do inject pread "$IN" $n EIO 1; done
inject pread "$IN" 3 SHORT 3
inject pread "$IN" 20 SHORT 3
for n in 25 31 40 52 64 77 89 101 112; do inject pread "$IN" $n EIO 1; done
for n in 27 58 95 108; do inject pread "$IN" $n SHORT 1; done
inject pread "$FX/base/config.json" 1 EIO 1
inject pread "$FX/base/tokenizer.json" 1 EIO 1
say "== opening the inputs: at plan time, for the data, a copied file"
inject open "$IN" 1 EACCES 1
inject open "$IN" 12 EMFILE 1
inject open "$IN" 13 EACCES 1
inject open "$IN" 24 EIO 1
inject open "$FX/base/generation_config.json" 1 EACCES 1
OS="$T/out*/.model-*.partial"
say "== writes of the output shards: headers, tensor data, short writes"
inject pwrite "$OS" 1 EIO 1
inject pwrite "$OS" 4 ENOSPC 1
for n in 5 9 14 19 23 27 31; do inject pwrite "$OS" $n EIO 1; done
inject pwrite "$OS" 11 ENOSPC 1
inject pwrite "$OS" 17 EFBIG 1
inject pwrite "$OS" 29 ENOSPC 1
inject pwrite "$OS" 34 EFBIG 1
inject pwrite "$OS" 7 SHORT 1
inject pwrite "$OS" 21 SHORT 1
inject pwrite "$OS" 33 SHORT 1
say "== writes of the index, recipe, copied files and checksums"
inject pwrite "$T/out*/.model.safetensors.index.json.partial" 1 ENOSPC 1
inject pwrite "$T/out*/.dare-stream.yml.partial" 1 EIO 1
inject pwrite "$T/out*/.config.json.partial" 1 EFBIG 1
inject pwrite "$T/out*/.CHECKSUMS.xxh128.partial" 1 ENOSPC 1
inject pwrite "$T/out*/.dare-stream.lock" 1 EROFS 1
J="$T/out*/.dare-stream.journal"
say "== journal appends"
inject write "$J" 1 ENOSPC 1
inject write "$J" 2 EIO 1
inject write "$J" 9 EFBIG 1
inject write "$J" 16 ENOSPC 1
inject write "$J" 23 EIO 1
inject write "$J" 12 SHORT 1
say "== preallocation, fsync, close, rename, creating the output files"
inject fallocate "$OS" 1 ENOSPC 1
inject fallocate "$OS" 2 EFBIG 1
inject fallocate "$OS" 4 ENOSPC 1
inject fsync "$T/out*/.*.partial" 1 EIO 1
inject fsync "$T/out*/.*.partial" 4 EIO 1
inject fsync "$T/out*/.*.partial" 7 ENOSPC 1
inject fsync "$T/out*/.*.partial" 11 EIO 1
inject close "$OS" 2 EIO 1
inject rename "$T/out*/*" 1 EROFS 1
inject rename "$T/out*/*" 3 EIO 1
inject rename "$T/out*/*" 5 EROFS 1
inject rename "$T/out*/*" 11 EIO 1
inject open "$OS" 1 EROFS 1
inject open "$OS" 3 ENOSPC 1
inject open "$T/out*/.dare-stream.yml.partial" 1 EACCES 1
inject open "$J" 1 EROFS 1
# The first open of the lock is the probe of a lock held by another run
# (none here: it finds no file); the second creates it.
inject open "$T/out*/.dare-stream.lock" 2 EROFS 1

say "== transient errors are retried"
transient pread "$IN" 30 EINTR
transient pread "$IN" 60 EAGAIN
transient pwrite "$OS" 10 EINTR
transient pwrite "$OS" 20 EAGAIN

# extract reads the base on a thread of its own (its tensors' digests): an
# error there ends the run like one on the model, and leaves no pack.
for nth in 12 20; do
	say "== extract: pread #$nth on the base's shards fails with EIO"
	rm -f "$T/fired" "$T/x.dsd"
	DS_FAULT_CALL=pread DS_FAULT_PATH="$FX/base/*.safetensors" \
		DS_FAULT_NTH=$nth DS_FAULT_ERRNO=EIO DS_FAULT_REPORT=$T/fired \
		LD_PRELOAD=$SHIM run "$DS_BIN" extract --base "$FX/base" \
		--model "$FX/ft1" -p 0.9 -o "$T/x.dsd"
	if [ ! -s "$T/fired" ]; then
		fail "the fault was never injected (exit $ds_rc)"
		continue
	fi
	fired=$(cut -d' ' -f2- "$T/fired")
	check "exit 1 (got $ds_rc)" [ "$ds_rc" -eq 1 ]
	stderr_has "the message names ${fired#"$T"/} and the offset" \
		"$(name_re "$fired"): reading at offset [0-9]+"
	check "no pack, no temporary" sh -c '! ls "$1"* 2>/dev/null' sh "$T/x.dsd"
done
inputs_verify

say "# $points injection points, $points_t transient"
ds_finish
