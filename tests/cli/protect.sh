#!/bin/sh
# SPDX-License-Identifier: MIT
# protect.sh - inputs are never written: output in, over or linked to an input
# shellcheck source=lib.sh
. "${DS_TESTLIB:-$(dirname "$0")/lib.sh}"
ds_setup protect

FX=$T/fx
mkfix "$FX" --models 1 --seed 3
inputs_record "$FX"
M="--method task_arithmetic --base $FX/base --model $FX/ft1 --quiet"

say "== output directory is an input directory, with --force"
# shellcheck disable=SC2086
run_expect 4 'inside the input' "$DS_BIN" merge -o "$FX/ft1" --force $M
say "== output directory inside an input directory"
# shellcheck disable=SC2086
run_expect 4 'inside the input' "$DS_BIN" merge -o "$FX/base/merged" $M
check "nothing created in the input" not [ -e "$FX/base/merged" ]
say "== output directory contains an input"
mkdir "$T/outer"
cp -r "$FX/ft1" "$T/outer/ft1"
run_expect 4 'contains the input' "$DS_BIN" merge -o "$T/outer" --force \
	--method task_arithmetic --base "$FX/base" --model "$T/outer/ft1"
say "== a model that is one file: the output may be made next to it"
FX1=$T/fx1
mkfix "$FX1" --models 1 --seed 3 --shards 1
mkdir "$T/files"
run_expect 0 '' "$DS_BIN" extract -q --base "$FX1/base" --model "$FX1/ft1" \
	-p 0.5 -o "$T/files/ft1.dsd"
cp "$FX1/ft1/model.safetensors" "$T/files/ft1.safetensors"
for one in ft1.dsd ft1.safetensors; do
	# from the files' directory, -o relative, as a user types it
	run_expect 0 '' sh -c 'cd "$1" && shift && exec "$@"' sh "$T/files" \
		"$DS_BIN" merge -o "merged-$one" --quiet --method dare_linear \
		-p 0.5 --base "$FX1/base" --model "$one"
	check "merged next to $one" [ -f "$T/files/merged-$one/model.safetensors" ]
	run_expect 4 "contains the input $T/files/$one" "$DS_BIN" merge \
		-o "$T/files" --force --quiet --method dare_linear -p 0.5 \
		--base "$FX1/base" --model "$T/files/$one"
	check "$one is still there" [ -f "$T/files/$one" ]
done
check "the pack's merge is the full model's" cmp -s \
	"$T/files/merged-ft1.dsd/model.safetensors" \
	"$T/files/merged-ft1.safetensors/model.safetensors"
say "== output path is a symlink to an input directory"
ln -s "$FX/base" "$T/link"
# shellcheck disable=SC2086
run_expect 4 'inside the input' "$DS_BIN" merge -o "$T/link" --force $M
say "== a shard of an interrupted merge replaced by a hard link to an input"
# shellcheck disable=SC2086
DARE_STREAM_TEST_KILL=tensor=2 run "$DS_BIN" merge -o "$T/out" $M
for f in "$T"/out/.*.partial; do
	case $f in *.safetensors.partial) ;; *) continue ;; esac
	rm "$f"
	name=$(basename "$f" .partial)
	ln "$FX/ft1/${name#.}" "$T/out/${name#.}" ||
		skip_all "no hard links here"
	break
done
# shellcheck disable=SC2086
run_expect 4 'is an input file' "$DS_BIN" merge -o "$T/out" --resume $M

ds_finish
