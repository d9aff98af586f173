#!/bin/sh
# SPDX-License-Identifier: MIT
# demo.sh - make a small Llama-like checkpoint set and DARE-merge it (make demo)
#
# usage: demo.sh DARE-STREAM MKFIXTURE DEMODIR
#   DEMODIR/models/{base,ft1,ft2}  synthetic BF16 checkpoints, 2 shards each
#   DEMODIR/merged                 dare_ties -p 0.9 merge of ft1 and ft2
set -eu

if [ $# -ne 3 ]; then
	echo "usage: $0 DARE-STREAM MKFIXTURE DEMODIR" >&2
	exit 2
fi
BIN=$1
MKFIXTURE=$2
DEMO=$3

step() { printf '\n==> %s\n' "$*"; }
show() { printf '$ %s\n' "$*"; "$@"; }

for exe in "$BIN" "$MKFIXTURE"; do
	if [ ! -x "$exe" ]; then
		echo "demo.sh: $exe is not built (run make first)" >&2
		exit 1
	fi
done

rm -rf "$DEMO"
mkdir -p "$DEMO"

step "Generate a base model and two SFT-like BF16 fine-tunes (Llama tensor names," \
	"4 layers, hidden 256, 2 shards + index each, a few MB)"
show "$MKFIXTURE" --models 2 --layers 4 --hidden 256 --vocab 2048 \
	--dtype bf16 --shards 2 --seed 2024 "$DEMO/models"
ls -l "$DEMO/models/base"

step "Merge them: DARE drops 90% of each delta (rescaling the rest by 10)," \
	"then TIES elects a sign per weight"
show "$BIN" merge -o "$DEMO/merged" --base "$DEMO/models/base" \
	--model "$DEMO/models/ft1" --model "$DEMO/models/ft2" \
	--method dare_ties -p 0.9 --seed 1 --memory 16M

step "What was written"
ls -l "$DEMO/merged"
if [ -f "$DEMO/merged/dare-stream.yml" ]; then
	printf -- '--- dare-stream.yml (the recipe, reproduces the merge bit for bit)\n'
	cat "$DEMO/merged/dare-stream.yml"
fi

step "The merged model's tensors (first lines of dare-stream inspect)"
"$BIN" inspect "$DEMO/merged" >"$DEMO/inspect.txt"
head -n 12 "$DEMO/inspect.txt"
printf '... (%s lines in %s)\n' "$(wc -l <"$DEMO/inspect.txt")" \
	"$DEMO/inspect.txt"

step "Verify the output: checksums (xxh128sum), then structure and checksums (dare-stream verify)"
if command -v xxh128sum >/dev/null 2>&1; then
	(cd "$DEMO/merged" && show xxh128sum -c CHECKSUMS.xxh128)
else
	echo "xxh128sum not installed (apt-get install xxhash); skipped"
fi
show "$BIN" verify "$DEMO/merged"

step "Done: merged model in $DEMO/merged"
