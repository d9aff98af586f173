#!/bin/sh
# SPDX-License-Identifier: MIT
# merge-parallel.sh - a dare-stream merge in N partitions with GNU parallel
#
#   merge-parallel.sh N OUT MERGE-ARGUMENTS...
#
# Runs, N at a time, "dare-stream merge -o OUT MERGE-ARGUMENTS...
# --partition K/N" for K = 0 ... N-1, then "dare-stream finalize OUT" once
# all of them succeeded.  The core of it is two lines:
#
#   parallel -q --halt now,fail=1 dare-stream merge -o OUT ARGS... \
#       --partition {}/N ::: $(seq 0 N-1)
#   dare-stream finalize OUT
#
# On one machine this only helps when one process cannot keep the disks
# busy; with "parallel --sshlogin" (-S) and OUT on a shared file system the
# partitions run on several machines: set PARALLEL="-S host1,host2" (GNU
# parallel reads its options from $PARALLEL).  $DARE_STREAM names the
# binary (default: dare-stream on PATH; an absolute path when remote).
set -u
if [ $# -lt 3 ]; then
	echo "usage: ${0##*/} N OUT MERGE-ARGUMENTS..." >&2
	exit 2
fi
n=$1
out=$2
shift 2
case $n in
'' | *[!0-9]* | 0*) echo "${0##*/}: N must be a number >= 1" >&2; exit 2 ;;
esac
ds=${DARE_STREAM:-dare-stream}
command -v parallel >/dev/null || {
	echo "${0##*/}: GNU parallel not found" >&2
	exit 2
}

# --halt now,fail=1: the first partition that fails stops the others (each
# stops resumably, see SIGNALS in dare-stream(1)); finalize is not run.
# Each partition's messages come out whole, tagged with its K (--tag); -q
# passes every argument as it is, not through a shell.
parallel --will-cite --halt now,fail=1 --tag -q -j "$n" \
	"$ds" merge -o "$out" "$@" --partition '{}'/"$n" ::: $(seq 0 $((n - 1))) ||
	exit
exec "$ds" finalize "$out"
