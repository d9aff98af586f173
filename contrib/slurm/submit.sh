#!/bin/bash
# SPDX-License-Identifier: MIT
# submit.sh - a dare-stream merge as a Slurm job array and a finalize job
#
#   submit.sh -n N [-r K,...] [-w] [-s SBATCH-OPTION]... -o OUT MERGE-ARGUMENTS...
#
# Submits dare-stream-merge.sbatch as an array of N tasks (0 to N-1), task K
# running "dare-stream merge -o OUT MERGE-ARGUMENTS... --resume
# --partition K/N" (with -r, only the parts listed: those to run again), and
# dare-stream-finalize.sbatch with --dependency=afterok on the array, which
# runs "dare-stream finalize OUT" once every task has succeeded (and is
# cancelled if one fails).  Prints the two job ids.  With -w, waits for the
# finalize job and exits 0 only if it completed.
set -u
me=${0##*/}
here=$(cd "$(dirname "$0")" && pwd) || exit 1

usage() {
	cat <<USAGE
Usage: $me -n N [-r K,...] [-w] [-s SBATCH-OPTION]... -o OUT [--] MERGE-ARGUMENTS...
Run "dare-stream merge -o OUT MERGE-ARGUMENTS..." as N Slurm array tasks,
each with --resume --partition K/N, then "dare-stream finalize OUT" after
all of them.

  -n, --tasks N        number of partitions (array tasks 0 to N-1)
  -r, --rerun K,...    submit only these parts of the N: those that failed or
                       ran out of time continue from their journal
  -o, --output OUT     the merge's output directory, on a shared file system
  -s, --sbatch OPTION  an option for both sbatch calls, e.g. -s --time=4:00:00
                       -s --partition=io (Slurm's partition); repeatable
  -w, --wait           wait for the finalize job; exit 0 only if it completed
  -h, --help           this help
The options of $me come first; the first other argument starts the merge
arguments.  sbatch's SBATCH_* environment variables apply as usual.
\$DARE_STREAM names the dare-stream binary the jobs run (default: on PATH).
USAGE
}

die() {
	echo "$me: $*" >&2
	exit 2
}

tasks='' out='' wait=0 rerun=''
sbopts=()
while [ $# -gt 0 ]; do
	case $1 in
	-n | --tasks) [ $# -ge 2 ] || die "$1 needs a value"; tasks=$2; shift 2 ;;
	--tasks=*) tasks=${1#*=}; shift ;;
	-o | --output) [ $# -ge 2 ] || die "$1 needs a value"; out=$2; shift 2 ;;
	--output=*) out=${1#*=}; shift ;;
	-s | --sbatch) [ $# -ge 2 ] || die "$1 needs a value"; sbopts+=("$2"); shift 2 ;;
	--sbatch=*) sbopts+=("${1#*=}"); shift ;;
	-r | --rerun) [ $# -ge 2 ] || die "$1 needs a value"; rerun=$2; shift 2 ;;
	--rerun=*) rerun=${1#*=}; shift ;;
	-w | --wait) wait=1; shift ;;
	-h | --help) usage; exit 0 ;;
	--) shift; break ;;
	*) break ;;
	esac
done
case $tasks in
'' | *[!0-9]* | 0*) die "-n N: a number of tasks >= 1 is required (see --help)" ;;
esac
array_spec=0-$((tasks - 1))
if [ -n "$rerun" ]; then
	case $rerun in
	*[!0-9,]* | ,* | *, | *,,*) die "-r K,...: part numbers separated by commas" ;;
	esac
	for k in ${rerun//,/ }; do
		[ "$((10#$k))" -lt "$tasks" ] || die "-r: part $k is not a part of $tasks (0 to $((tasks - 1)))"
	done
	array_spec=$rerun
fi
[ -n "$out" ] || die "-o OUT is required, before the merge arguments (see --help)"
[ $# -gt 0 ] || die "no merge arguments (see --help)"
for a; do
	case $a in
	--partition | --partition=*) die "the merge arguments must not hold --partition: $me adds it" ;;
	-o | --output | --output=*) die "give -o OUT before the merge arguments, once" ;;
	esac
done
command -v sbatch >/dev/null || die "sbatch not found: is Slurm installed here?"

# --parsable prints "ID" or "ID;CLUSTER".  The jobs get this environment
# (sbatch's default --export=ALL): N, and $DARE_STREAM if set.
DARE_STREAM_PARTS=$tasks
export DARE_STREAM_PARTS
array=$(sbatch --parsable --array="$array_spec" "${sbopts[@]}" \
	"$here/dare-stream-merge.sbatch" -o "$out" "$@") ||
	{ echo "$me: sbatch of the merge array failed" >&2; exit 1; }
array=${array%%;*}
final=$(sbatch --parsable --dependency=afterok:"$array" \
	--kill-on-invalid-dep=yes "${sbopts[@]}" \
	"$here/dare-stream-finalize.sbatch" "$out") || {
	echo "$me: sbatch of the finalize job failed; cancelling array $array" >&2
	scancel "$array"
	exit 1
}
final=${final%%;*}
echo "merge: job array $array (tasks $array_spec of $tasks)"
echo "finalize: job $final"
[ "$wait" = 1 ] || exit 0

# state JOB: the job's (or each array task's) state, one per line.
state() {
	scontrol show job -o "$1" 2>/dev/null |
		sed -n 's/.* JobState=\([A-Z_]*\) .*/\1/p'
}

while :; do
	s=$(state "$final")
	# A cluster that ignores --kill-on-invalid-dep leaves the job pending.
	if [ "$s" = PENDING ] && scontrol show job -o "$final" 2>/dev/null |
		grep -q ' Reason=DependencyNeverSatisfied '; then
		scancel "$final"
		s=CANCELLED
	fi
	case $s in
	'') echo "$me: finalize job $final is no longer known to slurmctld;" \
		"see its log" >&2; exit 1 ;;
	PENDING | RUNNING | CONFIGURING | COMPLETING | SUSPENDED | REQUEUED* | RESIZING | SIGNALING | STAGE_OUT)
		sleep "${DS_SUBMIT_POLL:-2}" ;;
	COMPLETED) echo "finalize: job $final completed: $out is complete"; exit 0 ;;
	*)
		echo "$me: finalize job $final ended $s; the merge tasks:" >&2
		scontrol show job -o "$array" 2>/dev/null | sed -n \
			's/^JobId=[0-9]* .*ArrayTaskId=\([0-9]*\) .* JobState=\([A-Z_]*\) .* ExitCode=\([0-9:]*\) .*/  task \1: \2, exit \3/p' >&2
		exit 1 ;;
	esac
done
