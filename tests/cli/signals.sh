#!/bin/sh
# SPDX-License-Identifier: MIT
# signals.sh - SIGINT, SIGTERM, SIGHUP stop a merge promptly and resumably
#
# At exact points (DARE_STREAM_TEST_KILL=POINT=N:SIG: the run signals
# itself) and from outside, on a run slowed by DARE_STREAM_TEST_PAUSE,
# with both I/O backends.  Each: exit 128 + the signal, a message saying
# so and the command that continues; nothing finished-looking, no
# temporary but the journal and the shards holding its tensors, no lock;
# then --resume continues from every kept tensor to the bytes of a clean
# run.  A signal once every tensor is written (the final renames) no
# longer stops the run: it completes.
# shellcheck source=lib.sh
. "${DS_TESTLIB:-$(dirname "$0")/lib.sh}"
ds_setup signals

FX=$T/fx
mkfix "$FX" --models 2 --seed 5 --hidden 256 --vocab 1024 --layers 2 \
	--shards 4 --int-tensor
inputs_record "$FX"
ARGS="--method dare_ties -p 0.7 --seed 99 --memory 4M --threads 2
      --base $FX/base --model $FX/ft1 --model $FX/ft2"
# shellcheck disable=SC2086
ds_merge "$T/clean" --quiet $ARGS || hard_error "the clean merge failed"
NT=$(sed -n '/"weight_map"/,/}/p' "$T/clean/model.safetensors.index.json" |
	grep -c '": "model-')
URING=pread
# shellcheck disable=SC2086
"$DS_BIN" merge -q -o "$T/probe" --io uring $ARGS 2>/dev/null && URING=uring

records_of() {
	if [ -f "$1/.dare-stream.journal" ]; then
		grep -Ec '^T [0-9]+ [0-9a-f]{16}$' "$1/.dare-stream.journal"
	else
		echo 0
	fi
}

# stopped OUT SIGNAL CODE: what a stopped run must have left and said.
stopped() {
	check "exit $3 (got $ds_rc)" [ "$ds_rc" -eq "$3" ]
	stderr_has "says it was stopped by $2" "stopped by $2"
	stderr_has "prints the command that continues" \
		"to continue: .*dare-stream merge .* --resume\$"
	check "nothing left locked" not [ -e "$1/.dare-stream.lock" ]
	records=$(records_of "$1")
	if [ "$records" -eq 0 ]; then
		no_output "$1"
	else
		no_output "$1" keep
		stderr_has "names what it kept" "keeps $records of $NT tensors"
		ds_extra=$(ls -A "$1" | grep -v -e '^\.dare-stream\.journal$' \
			-e '^\.model-0000[1-4]-of-00004\.safetensors\.partial$')
		check "only the journal and $records tensors' shards kept${ds_extra:+ (also: $ds_extra)}" \
			[ -z "$ds_extra" ]
	fi
}

# resumed OUT ARGS...: --resume from every kept tensor, clean run's bytes.
resumed() {
	ds_o=$1
	shift
	ds_merge "$ds_o" --resume "$@"
	[ "$records" -gt 0 ] && stderr_has "resumed from the $records kept tensors" \
		"resuming .*: $records of $NT tensors"
	check "identical to the clean run" diff -r "$T/clean" "$ds_o"
}

cases=0
say "== signals at exact points of the run"
for spec in window=1:INT:130 window=7:TERM:143 window=23:INT:130 \
	tensor=1:TERM:143 tensor=10:INT:130 tensor=21:TERM:143 \
	tensor=5:HUP:129; do
	point=${spec%:*}
	code=${spec##*:}
	sig=SIG${point#*:}
	for io in pread $URING; do
		cases=$((cases + 1))
		out=$T/p-$point-$io
		say "== $sig at $point ($io)"
		# SIGHUP as the default even under nohup (which ignores it,
		# and a merge keeps a signal ignored that it was given so)
		# shellcheck disable=SC2086
		DARE_STREAM_TEST_KILL=$point run env --default-signal=HUP \
			"$DS_BIN" merge -q -o "$out" --io $io $ARGS
		stopped "$out" "$sig" "$code"
		# shellcheck disable=SC2086
		resumed "$out" --io $io $ARGS
		[ "$io" = "$URING" ] && break
	done
done

say "== SIGTERM during the final renames: the output is complete, exit 0"
cases=$((cases + 1))
# shellcheck disable=SC2086
DARE_STREAM_TEST_KILL=finish=2:TERM run "$DS_BIN" merge -q -o "$T/fin" $ARGS
check "exit 0 (got $ds_rc)" [ "$ds_rc" -eq 0 ]
check "complete and identical to the clean run" diff -r "$T/clean" "$T/fin"

# wait_records OUT N: until the journal of OUT lists N tensors (10 s max).
wait_records() {
	ds_i=0
	while [ "$(records_of "$1")" -lt "$2" ] && [ $ds_i -lt 200 ]; do
		sleep 0.05
		ds_i=$((ds_i + 1))
	done
	[ "$(records_of "$1")" -ge "$2" ]
}

say "== signals from outside, on a slowed run"
for spec in INT:130:3:pread TERM:143:8:pread INT:130:12:$URING \
	TERM:143:2:$URING HUP:129:6:pread; do
	sig=${spec%%:*}
	rest=${spec#*:}
	code=${rest%%:*}
	rest=${rest#*:}
	after=${rest%%:*}
	io=${rest#*:}
	cases=$((cases + 1))
	out=$T/x-$sig-$after-$io
	say "== SIG$sig after $after tensors ($io)"
	# A background job of a script ignores SIGINT unless told otherwise,
	# and one under nohup SIGHUP.
	# shellcheck disable=SC2086
	DARE_STREAM_TEST_PAUSE=window=40 env --default-signal=INT,HUP \
		"$DS_BIN" merge -q -o "$out" --io "$io" $ARGS \
		>"$T/stdout" 2>"$T/stderr" &
	pid=$!
	if ! wait_records "$out" "$after"; then
		fail "the run never journaled $after tensors"
		kill -KILL $pid
		wait $pid
		continue
	fi
	t0=$(date +%s%N)
	kill -"$sig" $pid
	wait $pid
	ds_rc=$?
	ms=$((($(date +%s%N) - t0) / 1000000))
	say "  stopped $ms ms after the signal"
	check "stopped promptly ($ms ms < 3000)" [ "$ms" -lt 3000 ]
	stopped "$out" "SIG$sig" "$code"
	check "kept at least the $after tensors journaled before" \
		[ "$records" -ge "$after" ]
	# shellcheck disable=SC2086
	resumed "$out" --io "$io" $ARGS
done

say "# $cases signal cases"
ds_finish
