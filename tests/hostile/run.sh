#!/bin/sh
# SPDX-License-Identifier: MIT
# run.sh - hostile inputs through inspect and merge: exit, message, no crash
#
# Environment (set by `make check`): DS_BIN (the dare-stream binary),
# DS_MKFIXTURE (tests/mkfixture), PYTHON3.  DS_KEEP=1 keeps the work
# directory.  Exit 0 when every case behaves, 1 when one does not, 77 when
# python3 is missing (the corpus is written by gen.py).
#
# Each case runs `dare-stream inspect CASE`, then a merge with CASE as the
# base and one with CASE as a model, and checks every run for: the exit code
# (3 invalid input, 2 bad recipe value), a message naming the file and the
# problem, no crash (exit >= 128, a hang, a sanitizer report), no raw escape
# byte from the file reaching the terminal, and no output that looks complete
# (no CHECKSUMS.xxh128, no *.safetensors in OUT).

here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/../.." && pwd)
DS_BIN=${DS_BIN:-$top/dare-stream}
DS_MKFIXTURE=${DS_MKFIXTURE:-$top/tests/mkfixture}
PYTHON3=${PYTHON3:-python3}
LC_ALL=C
export LC_ALL
unset HF_HUB_CACHE HF_HOME

# Cases known to fail, with the reason; a pass among them is reported
# (XPASS) and counts as a failure, so the list is kept honest.
XFAIL=""

if [ -z "$PYTHON3" ] || [ "$PYTHON3" = : ] ||
   ! "$PYTHON3" -c 'import sys' 2>/dev/null; then
	echo "SKIP hostile: python3 not found"
	exit 77
fi
for b in "$DS_BIN" "$DS_MKFIXTURE"; do
	[ -x "$b" ] || { echo "ERROR hostile: $b is not an executable"; exit 99; }
done
TIMEOUT=
command -v timeout >/dev/null 2>&1 && TIMEOUT="timeout -k 5 60"

W=$(mktemp -d "${TMPDIR:-/tmp}/ds-hostile.XXXXXX") || exit 99
cleanup() {
	if [ "${DS_KEEP:-0}" = 1 ]; then echo "kept $W"; else rm -rf "$W"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP
OUT=$W/out
ESC=$(printf '\033')
TAB=$(printf '\t')

"$DS_MKFIXTURE" --models 2 --shards 2 --layers 1 --hidden 16 --vocab 32 \
	"$W/valid" >/dev/null || { echo "ERROR hostile: mkfixture failed"; exit 99; }
"$PYTHON3" "$here/gen.py" "$W/cases" ||
	{ echo "ERROR hostile: gen.py failed"; exit 99; }

cases=0 passed=0 failed=0 xfailed=0

# looks_complete: OUT holds something a user could take for a finished merge.
looks_complete() {
	[ -e "$OUT/CHECKSUMS.xxh128" ] && return 0
	for f in "$OUT"/*.safetensors; do
		[ -e "$f" ] && return 0
	done
	return 1
}

# run_one WHAT EXIT PROBLEM FILE CMD...: run CMD; on a failure set $why.
run_one() {
	what=$1 want=$2 problem=$3 file=$4
	shift 4
	rm -rf "$OUT"
	$TIMEOUT "$@" </dev/null >"$W/stdout" 2>"$W/stderr"
	got=$?
	msg=$(head -c 300 "$W/stderr" | tr -d '\033' | head -n 1)
	if [ -n "$TIMEOUT" ] && [ "$got" -eq 124 ]; then
		why="$what: hung (killed after 60 s)"
	elif [ "$got" -ge 128 ]; then
		why="$what: crashed (exit $got): $msg"
	elif grep -Eq 'Sanitizer|runtime error:' "$W/stderr"; then
		why="$what: sanitizer report:"
		why="$why $(grep -m1 -E 'Sanitizer|runtime error:' "$W/stderr")"
	elif [ "$got" -ne "$want" ]; then
		why="$what: exit $got, expected $want: $msg"
	elif ! grep -qF -- "$problem" "$W/stderr"; then
		why="$what: message lacks '$problem': $msg"
	elif ! grep -qF -- "$file" "$W/stderr"; then
		why="$what: message does not name '$file': $msg"
	elif grep -q "$ESC" "$W/stderr"; then
		why="$what: a raw escape byte from the input reached stderr"
	elif looks_complete; then
		why="$what: left output that looks complete in OUT"
	fi
	[ -z "$why" ]
}

# verdict NAME: one line for the case, counted.
verdict() {
	cases=$((cases + 1))
	known=no
	for x in $XFAIL; do [ "$x" = "$1" ] && known=yes; done
	if [ -z "$why" ] && [ $known = no ]; then
		passed=$((passed + 1)); echo "ok    $1"
	elif [ -z "$why" ]; then
		failed=$((failed + 1)); echo "XPASS $1: passes now; drop it from XFAIL"
	elif [ $known = yes ]; then
		xfailed=$((xfailed + 1)); echo "xfail $1: $why"
	else
		failed=$((failed + 1)); echo "FAIL  $1: $why"
	fi
}

# file_case NAME ARG EXIT PROBLEM FILE: inspect, merge as base, as model.
file_case() {
	c=$W/cases/$2
	why=
	run_one inspect "$3" "$4" "$5" "$DS_BIN" inspect "$c" &&
	run_one "merge --base" "$3" "$4" "$5" "$DS_BIN" merge -q \
		--method task_arithmetic -o "$OUT" --base "$c" \
		--model "$W/valid/ft1" &&
	run_one "merge --model" "$3" "$4" "$5" "$DS_BIN" merge -q \
		--method task_arithmetic -o "$OUT" --base "$W/valid/base" \
		--model "$W/valid/ft1" --model "$c"
	verdict "$1"
}

# recipe_case NAME EXIT PROBLEM FILE MERGE-ARGS...: a bad recipe value.
recipe_case() {
	name=$1 want=$2 problem=$3 file=$4
	shift 4
	why=
	run_one merge "$want" "$problem" "$file" "$DS_BIN" merge -q \
		-o "$OUT" "$@"
	verdict "$name"
}

# yaml_recipe NAME METHOD PARAMS-OF-MODEL-2 [GLOBAL-PARAMS]: a --config file.
yaml_recipe() {
	mkdir -p "$W/recipes"
	{
		printf 'merge_method: %s\nbase_model: %s\nmodels:\n' "$2" \
			"$W/valid/base"
		printf '  - model: %s\n    parameters:\n      weight: 1\n' \
			"$W/valid/ft1"
		[ "$2" = dare_linear ] && printf '      drop_rate: 0.5\n'
		printf '  - model: %s\n    parameters:\n' "$W/valid/ft2"
		printf '      %s\n' "$3"
		[ -n "$4" ] && printf 'parameters:\n  %s\n' "$4"
	} >"$W/recipes/$1.yml"
	echo "$W/recipes/$1.yml"
}

while IFS=$TAB read -r name arg want problem file; do
	file_case "$name" "$arg" "$want" "$problem" "$file"
done <"$W/cases/cases.tsv"

V="--base $W/valid/base --model $W/valid/ft1 --model $W/valid/ft2"
# shellcheck disable=SC2086 # $V is split on purpose (no spaces in $W)
{
recipe_case recipe-p-negative 2 "between 0 and 1" "--drop-rate -0.1" \
	$V --method dare_linear -p -0.1
recipe_case recipe-p-above-1 2 "between 0 and 1" "--drop-rate 1.5" \
	$V --method dare_linear -p 1.5
recipe_case recipe-density-above-1 2 "between 0 and 1" "--density 2" \
	$V --method dare_linear --density 2
recipe_case recipe-drop-rates-nan 2 "expected comma-separated numbers" \
	"--drop-rates 0.5,nan" $V --method dare_linear --drop-rates 0.5,nan
recipe_case recipe-weights-nan 2 "finite" "--weights nan,1" \
	$V --method task_arithmetic --weights nan,1
recipe_case recipe-weights-zero-total 2 "weights sum to zero" "--weights" \
	$V --method task_arithmetic --weights 1,-1 --normalize
recipe_case recipe-weights-count 2 "has 3 values for 2 models" "--weights" \
	$V --method task_arithmetic --weights 1,1,1
recipe_case recipe-lambda-inf 2 "finite" "--lambda inf" \
	$V --method task_arithmetic --lambda inf
recipe_case recipe-lambda-nan 2 "finite" "--lambda nan" \
	$V --method task_arithmetic --lambda nan
recipe_case recipe-weight-overflow 2 "finite" "--weight 1e999" \
	$V --method task_arithmetic --weight 1e999

y=$(yaml_recipe drop-rate dare_linear "drop_rate: 1.5")
recipe_case recipe-yaml-drop-rate 2 "outside [0, 1]" drop-rate.yml \
	--config "$y"
y=$(yaml_recipe weight-inf task_arithmetic "weight: inf")
recipe_case recipe-yaml-weight-inf 2 "not a finite number" weight-inf.yml \
	--config "$y"
y=$(yaml_recipe lambda-inf task_arithmetic "weight: 1" "lambda: inf")
recipe_case recipe-yaml-lambda-inf 2 "finite" lambda-inf.yml --config "$y"
y=$(yaml_recipe weight-word task_arithmetic "weight: heavy")
recipe_case recipe-yaml-not-a-number 3 "expected a number" weight-word.yml \
	--config "$y"
mkdir -p "$W/recipes"
printf 'merge_method: [task_arithmetic\n' >"$W/recipes/broken.yml"
recipe_case recipe-yaml-broken 3 "broken.yml:" "broken.yml" \
	--config "$W/recipes/broken.yml"
}

echo "hostile: $cases cases, $passed ok, $failed failed, $xfailed known" \
	"failures (XFAIL)"
[ "$failed" -eq 0 ]
