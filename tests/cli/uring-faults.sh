#!/bin/sh
# SPDX-License-Identifier: MIT
# uring-faults.sh - the io_uring backend meets a full disk and a read-only OUT
#
# Its transfers bypass the libc calls faults.sh intercepts, so the faults
# here are real: small tmpfs mounts and read-only mounts (root only;
# skipped, 77, where mounting is not permitted or io_uring is missing).
# An input truncated during an io_uring run is in races.sh.
# shellcheck source=lib.sh
. "${DS_TESTLIB:-$(dirname "$0")/lib.sh}"
ds_setup uring-faults

FX=$T/fx
mkfix "$FX" --models 2 --seed 5 --hidden 256 --vocab 1024 --layers 2 \
	--shards 4 --int-tensor
inputs_record "$FX"
ARGS="--method dare_ties -p 0.7 --seed 99 --memory 4M --threads 2 -q
      --io uring --base $FX/base --model $FX/ft1 --model $FX/ft2"
# shellcheck disable=SC2086
"$DS_BIN" merge -o "$T/clean" $ARGS 2>/dev/null ||
	skip_all "io_uring is not available here"
NT=$(sed -n '/"weight_map"/,/}/p' "$T/clean/model.safetensors.index.json" |
	grep -c '": "model-')
mkdir "$T/m" "$T/ro" "$T/bind" || hard_error "mkdir"
mount -t tmpfs -o size=64k tmpfs "$T/m" 2>/dev/null ||
	skip_all "cannot mount a tmpfs here (not root?)"
trap 'umount "$T/bind" 2>/dev/null; umount "$T/ro" 2>/dev/null;
      umount "$T/m" 2>/dev/null; ds_cleanup' EXIT
cases=0

say "== output far larger than the disk: refused when the shards are created"
cases=$((cases + 1))
# shellcheck disable=SC2086
run_expect 1 'No space left on device' "$DS_BIN" merge -o "$T/m/out" $ARGS
stderr_has "the message names a file in OUT" "$T/m/out/"
no_output "$T/m/out"
check "the disk is empty again" [ -z "$(ls -A "$T/m")" ]

say "== the disk fills up at the end: the merged shards are kept; --resume"
cases=$((cases + 1))
pages=0
for f in "$T"/clean/model-*.safetensors; do
	pages=$((pages + ($(wc -c <"$f") + 4095) / 4096))
done
# The shards, the journal and the lock fit; the index, the recipe and the
# copied files do not.
umount "$T/m"
mount -t tmpfs -o size=$(((pages + 2) * 4096)) tmpfs "$T/m" ||
	hard_error "remount"
# shellcheck disable=SC2086
run_expect 1 'No space left on device' "$DS_BIN" merge -o "$T/m/out" $ARGS
stderr_has "the message names a file in OUT" "$T/m/out/"
stderr_has "and how to continue" "continue with: .* --resume\$"
no_output "$T/m/out" keep
records=$(grep -Ec '^T [0-9]+ [0-9a-f]{16}$' "$T/m/out/.dare-stream.journal")
check "every tensor kept ($records of $NT)" [ "$records" -eq "$NT" ]
check "no temporary but the shards and the journal" [ -z "$(ls -A "$T/m/out" |
	grep -v -e '^\.dare-stream\.journal$' -e '^\.model-.*\.partial$')" ]
mount -o remount,size=$(((pages + 64) * 4096)) "$T/m" ||
	hard_error "cannot grow the tmpfs"
# shellcheck disable=SC2086
run "$DS_BIN" merge -o "$T/m/out" --resume --io uring \
	--method dare_ties -p 0.7 --seed 99 --memory 4M --threads 2 \
	--base "$FX/base" --model "$FX/ft1" --model "$FX/ft2"
check "resumed once there is room (exit $ds_rc)" [ "$ds_rc" -eq 0 ]
stderr_has "from every kept tensor" "resuming .*: $NT of $NT tensors"
check "identical to the clean run" diff -r "$T/clean" "$T/m/out"

say "== a read-only file system"
cases=$((cases + 1))
mount -t tmpfs -o size=1m,ro tmpfs "$T/ro" || hard_error "mount ro"
# shellcheck disable=SC2086
run_expect 1 'Read-only file system' "$DS_BIN" merge -o "$T/ro/out" $ARGS
stderr_has "the message names OUT" "$T/ro/out: cannot create the output"
check "nothing created" [ -z "$(ls -A "$T/ro")" ]

say "== an existing OUT mounted read-only"
cases=$((cases + 1))
mkdir "$T/bind/out" || hard_error "mkdir"
mount --bind "$T/bind/out" "$T/bind/out" &&
	mount -o remount,ro,bind "$T/bind/out" ||
	hard_error "read-only bind mount"
# shellcheck disable=SC2086
run_expect 1 'Read-only file system' "$DS_BIN" merge -o "$T/bind/out" $ARGS
stderr_has "the message names the file it could not create" \
	"$T/bind/out/\\.dare-stream\\.lock"
check "OUT still empty" [ -z "$(ls -A "$T/bind/out")" ]
umount "$T/bind/out"

say "# $cases io_uring fault cases"
ds_finish
