#!/bin/sh
# SPDX-License-Identifier: MIT
# slurm.sh - contrib/slurm and contrib/parallel on a real one-node Slurm
#
# Starts a private munged, slurmctld and slurmd (Debian's munge and
# slurm-wlm) with a configuration, key, state, spool and logs in a temporary
# directory and ports of their own, so that it never meets a system Slurm;
# submits contrib/slurm/submit.sh with 4 array tasks (each a --partition K/4
# of one merge) and its finalize job, waits for them, and compares every
# file of the result byte for byte with the same merge run as one process;
# then the same for contrib/parallel/merge-parallel.sh, and a merge whose
# tasks fail must not be finalized.  Prints the wall times.  The daemons are
# stopped and the directory removed however the test ends.
#
# Skipped (77) only when the daemons cannot run here: Slurm or munge not
# installed, not root (slurmd runs jobs as their user), or a daemon that
# does not start (its log is shown).  Everything else is a check: a
# dare-stream without --partition or finalize fails.
#
# Run by "make slurm-check" (contrib/check.sh does), or by hand with DS_BIN,
# DS_MKFIXTURE and DS_TESTLIB set as tests/cli/lib.sh describes.
# Functions run through check look unreachable to shellcheck.
# shellcheck disable=SC2317,SC2016
# shellcheck source=cli/lib.sh
. "${DS_TESTLIB:-$(dirname "$0")/cli/lib.sh}"
src=$(cd "$(dirname "$0")/.." && pwd)
ds_setup slurm

[ "$(id -u)" = 0 ] ||
	skip_all "needs root: slurmd starts the jobs as their user"
for c in munged slurmctld slurmd sbatch scontrol sinfo scancel; do
	command -v "$c" >/dev/null ||
		skip_all "$c not found (apt-get install slurm-wlm munge)"
done

S=$T/slurm
mkdir -p "$S/state" "$S/spool" "$S/munge" "$S/run" "$T/jobs" ||
	hard_error "mkdir in $T"
# munged wants its key private and its socket reachable by everyone.
chmod 700 "$S/munge"
chmod 711 "$T" "$S"
chmod 755 "$S/run"

# ---- the daemons -----------------------------------------------------------

ctld_pid='' slurmd_pid=''
stop_daemons() {
	for p in "$slurmd_pid" "$ctld_pid"; do
		[ -n "$p" ] && kill "$p" 2>/dev/null
	done
	for p in "$slurmd_pid" "$ctld_pid"; do
		[ -n "$p" ] && wait "$p" 2>/dev/null
	done
	if [ -f "$S/munge/munged.pid" ]; then
		p=$(cat "$S/munge/munged.pid")
		kill "$p" 2>/dev/null
		i=0
		while kill -0 "$p" 2>/dev/null && [ "$i" -lt 50 ]; do
			sleep 0.1
			i=$((i + 1))
		done
	fi
	slurmd_pid='' ctld_pid=''
	rm -f "$S/munge/munged.pid"
}
trap 'stop_daemons; ds_cleanup' EXIT

# tail_logs: the end of each daemon's log, for a reason to skip or fail.
tail_logs() {
	for l in "$S/munge/munged.log" "$S/slurmctld.log" "$S/slurmd.log" \
		"$S/slurmctld.out" "$S/slurmd.out"; do
		[ -s "$l" ] || continue
		say "  -- $(basename "$l"):"
		tail -n 15 "$l" | sed 's/^/  | /'
	done
}

no_daemon() {
	say "SKIP: $*"
	tail_logs
	skip_all "$*"
}

# munge: a key of our own, a socket of our own.
if ! dd if=/dev/urandom of="$S/munge/munge.key" bs=1024 count=1 2>/dev/null ||
	! chmod 400 "$S/munge/munge.key"; then
	hard_error "cannot write a munge key"
fi
munged --key-file="$S/munge/munge.key" --socket="$S/run/munge.sock" \
	--pid-file="$S/munge/munged.pid" --log-file="$S/munge/munged.log" \
	--seed-file="$S/munge/munged.seed" >"$S/munge/munged.out" 2>&1 ||
	{ cat "$S/munge/munged.out"; no_daemon "munged does not start"; }

# Ports of our own, from the pid, away from Slurm's 6817-6819.
port=$((20000 + ($$ % 5000) * 2))
host=$(hostname -s)
node=$(slurmd -C 2>/dev/null | sed -n 's/^\(NodeName=[^ ]* CPUs=.*\)/\1/p')
[ -n "$node" ] || no_daemon "slurmd -C does not describe this machine"
cat >"$S/slurm.conf" <<EOF
ClusterName=dstest
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=$port
SlurmdPort=$((port + 1))
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$S/run/munge.sock
StateSaveLocation=$S/state
SlurmdSpoolDir=$S/spool
SlurmctldPidFile=$S/slurmctld.pid
SlurmdPidFile=$S/slurmd.pid
SlurmctldLogFile=$S/slurmctld.log
SlurmdLogFile=$S/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
PlugStackConfig=$S/plugstack.conf
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
JobCompType=jobcomp/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MpiDefault=none
ReturnToService=2
MinJobAge=600
MailProg=/bin/true
$node NodeAddr=127.0.0.1 State=UNKNOWN
PartitionName=dstest Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
: >"$S/plugstack.conf"
SLURM_CONF=$S/slurm.conf
export SLURM_CONF
# Nothing of a user's environment chooses for the jobs.
unset SBATCH_PARTITION SBATCH_ACCOUNT SBATCH_QOS SBATCH_TIMELIMIT \
	SBATCH_EXPORT SBATCH_CLUSTERS SLURM_CLUSTERS

slurmctld -D -c -f "$S/slurm.conf" >"$S/slurmctld.out" 2>&1 &
ctld_pid=$!
slurmd -D -f "$S/slurm.conf" >"$S/slurmd.out" 2>&1 &
slurmd_pid=$!

# The node must come up idle within 60 s.
i=0
state=
while [ $i -lt 120 ]; do
	kill -0 "$ctld_pid" 2>/dev/null || no_daemon "slurmctld exited"
	kill -0 "$slurmd_pid" 2>/dev/null || no_daemon "slurmd exited"
	state=$(sinfo -h -N -n "$host" -o %T 2>/dev/null)
	case $state in idle*) break ;; esac
	sleep 0.5
	i=$((i + 1))
done
case $state in
idle*) ok "one-node Slurm up: $host idle ($(sinfo -h -N -o '%c CPUs, %m MB'))" ;;
*) scontrol show node "$host" 2>&1 | sed 's/^/  /'
	no_daemon "node $host not idle after 60 s (state '${state:-none}')" ;;
esac

# ---- the merges ------------------------------------------------------------

now() { date +%s.%N; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", b - a }'; }

FX=$T/fx
say "== fixtures: base and 2 fine-tunes, 4 layers, hidden 128"
mkfix "$FX" --models 2 --layers 4 --hidden 128 --seed 17
MERGE="--method dare_ties -p 0.7 --seed 11 --shard-size 128K \
--base $FX/base --model $FX/ft1 --model $FX/ft2"
inputs_record "$FX"

check "merge --help lists --partition" \
	sh -c '"$1" merge --help | grep -q -- --partition' sh "$DS_BIN"

t0=$(now)
# shellcheck disable=SC2086 # MERGE is a word list
ds_merge "$T/single" -q $MERGE || hard_error "the single-process merge failed"
t_single=$(secs "$t0" "$(now)")
nshards=$(find "$T/single" -name '*.safetensors' | wc -l)
if [ "$nshards" -ge 8 ]; then
	ok "the single merge wrote $nshards shards (2 or more per task)"
else
	fail "the single merge wrote $nshards shards, expected >= 8"
fi

# files DIR: every file under DIR, hidden ones too, sorted.
files() { (cd "$1" && find . -type f -print) | sort; }

# same_as_single DESC DIR: DIR holds the files of the single merge, no
# other (no part's manifest or temporary left behind), each byte for byte.
same_as_single() {
	files "$T/single" >"$T/files.single"
	files "$2" >"$T/files.other"
	if ! cmp -s "$T/files.single" "$T/files.other"; then
		fail "$1: not the files of the single merge"
		diff "$T/files.single" "$T/files.other" | sed -n '1,10s/^/  /p'
		return 1
	fi
	ds_bad=0
	while IFS= read -r f; do
		cmp -s "$T/single/$f" "$2/$f" || {
			say "  differs: $f"
			ds_bad=$((ds_bad + 1))
		}
	done <"$T/files.single"
	if [ "$ds_bad" = 0 ]; then
		ok "$1: all $(wc -l <"$T/files.single") files byte-identical to the single merge"
	else
		fail "$1: $ds_bad files differ from the single merge"
	fi
}

# job_ok ID DESC: every task of job ID completed with exit 0:0.
job_ok() {
	scontrol show job -o "$1" >"$T/job.txt" 2>&1
	n=$(grep -c 'JobState=COMPLETED .*ExitCode=0:0 ' "$T/job.txt")
	all=$(grep -c '^JobId=' "$T/job.txt")
	if [ "$all" -ge 1 ] && [ "$n" = "$all" ]; then
		ok "$2: $n of $all completed, exit 0"
	else
		fail "$2: $n of $all completed with exit 0"
		awk '{ l = " "; for (i = 1; i <= NF; i++)
			if ($i ~ /^(JobId|ArrayTaskId|JobState|ExitCode)=/)
				l = l " " $i; print l }' "$T/job.txt"
	fi
}

say "== contrib/slurm/submit.sh: 4 array tasks, then finalize"
DARE_STREAM=$DS_BIN
export DARE_STREAM
t0=$(now)
# shellcheck disable=SC2086 # MERGE is a word list
(cd "$T/jobs" && "$src/contrib/slurm/submit.sh" -n 4 --wait \
	-o "$T/slurm-out" -- -q $MERGE) >"$T/submit.out" 2>&1
rc=$?
t_slurm=$(secs "$t0" "$(now)")
sed 's/^/  | /' "$T/submit.out"
if [ "$rc" = 0 ]; then
	ok "submit.sh --wait exited 0"
else
	fail "submit.sh --wait exited $rc"
	for l in "$T"/jobs/*.out; do
		[ -f "$l" ] || continue
		say "  -- $(basename "$l"):"
		sed -n '1,8s/^/  | /p' "$l"
	done
fi
array=$(sed -n 's/^merge: job array \([0-9]*\) (tasks 0-3 of 4)$/\1/p' \
	"$T/submit.out")
final=$(sed -n 's/^finalize: job \([0-9]*\)$/\1/p' "$T/submit.out")
if [ -n "$array" ] && [ -n "$final" ]; then
	ok "submit.sh printed the job ids: array $array, finalize $final"
	job_ok "$array" "merge array tasks"
	check "the array had 4 tasks" \
		test "$(grep -c '^JobId=' "$T/job.txt")" = 4
	job_ok "$final" "finalize job"
else
	fail "submit.sh printed no job ids"
fi
same_as_single "slurm" "$T/slurm-out"
run_expect 0 "" "$DS_BIN" verify "$T/slurm-out"

say "== contrib/parallel/merge-parallel.sh: 4 partitions"
if command -v parallel >/dev/null; then
	t0=$(now)
	# shellcheck disable=SC2086 # MERGE is a word list
	run "$src/contrib/parallel/merge-parallel.sh" 4 "$T/par-out" -q $MERGE
	t_par=$(secs "$t0" "$(now)")
	if [ "$ds_rc" = 0 ]; then
		ok "merge-parallel.sh exited 0"
	else
		fail "merge-parallel.sh exited $ds_rc"
		show_output
	fi
	same_as_single "parallel" "$T/par-out"
else
	fail "GNU parallel not installed (apt-get install parallel)"
	t_par=-
fi

say "== parts submitted separately (-r): 1 and 3 of 4, then 0 and 2"
# shellcheck disable=SC2086 # MERGE is a word list
(cd "$T/jobs" && "$src/contrib/slurm/submit.sh" -n 4 -r 1,3 --wait \
	-o "$T/rerun-out" -- -q $MERGE) >"$T/submit.out" 2>&1
rc=$?
sed 's/^/  | /' "$T/submit.out"
check "finalize fails while parts 0 and 2 are missing" test "$rc" != 0
check "no CHECKSUMS.xxh128 while parts are missing" \
	test ! -e "$T/rerun-out/CHECKSUMS.xxh128"
# shellcheck disable=SC2086 # MERGE is a word list
(cd "$T/jobs" && "$src/contrib/slurm/submit.sh" -n 4 -r 0,2 --wait \
	-o "$T/rerun-out" -- -q $MERGE) >"$T/submit.out" 2>&1
rc=$?
sed 's/^/  | /' "$T/submit.out"
check "the missing parts submitted: finalize completes" test "$rc" = 0
same_as_single "parts 1,3 then 0,2" "$T/rerun-out"

say "== a merge whose tasks fail is not finalized"
# shellcheck disable=SC2086 # MERGE is a word list
(cd "$T/jobs" && "$src/contrib/slurm/submit.sh" -n 2 --wait \
	-o "$T/bad-out" -- -q $MERGE --model "$T/no-such-model") \
	>"$T/submit.out" 2>&1
rc=$?
sed 's/^/  | /' "$T/submit.out"
check "submit.sh --wait exits non-zero when the tasks fail" test "$rc" != 0
check "the finalize job did not complete" \
	not grep -q 'completed:' "$T/submit.out"
check "no CHECKSUMS.xxh128 in the failed merge's OUT" \
	test ! -e "$T/bad-out/CHECKSUMS.xxh128"

say "== the batch script's command line, without Slurm"
printf '#!/bin/sh\nprintf "%%s " "$@"\n' >"$T/args"
chmod +x "$T/args"
run env DARE_STREAM="$T/args" SLURM_ARRAY_TASK_ID=2 SLURM_ARRAY_TASK_COUNT=4 \
	SLURM_ARRAY_TASK_MIN=0 SLURM_ARRAY_TASK_MAX=3 \
	sh "$src/contrib/slurm/dare-stream-merge.sbatch" -o out --base b
check "task 2 of 0-3 runs part 2/4" \
	test "$(cat "$T/stdout")" = "merge -o out --base b --resume --partition 2/4 "
run env DARE_STREAM="$T/args" SLURM_ARRAY_TASK_ID=3 SLURM_ARRAY_TASK_COUNT=2 \
	SLURM_ARRAY_TASK_MIN=1 SLURM_ARRAY_TASK_MAX=3 DARE_STREAM_PARTS=4 \
	sh "$src/contrib/slurm/dare-stream-merge.sbatch" -o out --base b
check "task 3 of 1,3 with DARE_STREAM_PARTS=4 runs part 3/4" \
	test "$(cat "$T/stdout")" = "merge -o out --base b --resume --partition 3/4 "
run_expect 2 "array must be 0-N-1" env DARE_STREAM="$T/args" \
	SLURM_ARRAY_TASK_ID=3 SLURM_ARRAY_TASK_COUNT=2 SLURM_ARRAY_TASK_MIN=1 \
	SLURM_ARRAY_TASK_MAX=3 \
	sh "$src/contrib/slurm/dare-stream-merge.sbatch" -o out --base b
run_expect 2 "not a job array task" env -u SLURM_ARRAY_TASK_ID \
	sh "$src/contrib/slurm/dare-stream-merge.sbatch" -o out --base b

say "== usage errors of submit.sh"
run_expect 2 "-n N" "$src/contrib/slurm/submit.sh" -o "$T/x" -- --base b
run_expect 2 "must not hold --partition" "$src/contrib/slurm/submit.sh" \
	-n 2 -o "$T/x" -- --base b --partition 0/2
run_expect 2 "part 4 is not a part of 4" "$src/contrib/slurm/submit.sh" \
	-n 4 -r 1,4 -o "$T/x" -- --base b

say "time: single merge ${t_single} s; slurm submit-to-finish ${t_slurm} s (4 tasks + finalize); parallel ${t_par} s"
ds_finish
