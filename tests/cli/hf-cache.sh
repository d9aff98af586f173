#!/bin/sh
# SPDX-License-Identifier: MIT
# hf-cache.sh - models named org/name are found in the local Hugging Face cache
#
# A fake cache laid out like huggingface_hub's: models--org--name/refs/main
# holds a revision, snapshots/REV/ holds symlinks into blobs/.  Merging by id
# must give the same bytes as merging by path, through $HF_HUB_CACHE,
# $HF_HOME/hub and ~/.cache/huggingface/hub; a missing id says how to
# download it (huggingface-cli) and nothing is ever downloaded.
# Word-list variables (ARGS, MERGE, M) are split on purpose; functions
# run through check look unreachable to shellcheck.
# shellcheck disable=SC2086,SC2317
# shellcheck source=lib.sh
. "${DS_TESTLIB:-$(dirname "$0")/lib.sh}"
ds_setup hf-cache

FX=$T/fx
say "== fixture and fake caches"
mkfix "$FX" --models 2 --seed 61

# fill_cache HUB: org/base, org/ft1, org/ft2, and a stale older snapshot
# of org/ft1 (holding ft2's files) that refs/main does not point at.
fill_cache() {
	hf_cache_add "$1" org/ft1 "$FX/ft2" 1111111111111111111111111111111111111111
	hf_cache_add "$1" org/base "$FX/base"
	hf_cache_add "$1" org/ft1 "$FX/ft1"
	hf_cache_add "$1" org/ft2 "$FX/ft2"
}

fill_cache "$T/hub"
fill_cache "$T/hfhome/hub"
fill_cache "$T/home/.cache/huggingface/hub"
mkdir -p "$T/wrong"
hf_cache_add "$T/wrong/hub" org/base "$FX/ft2"
hf_cache_add "$T/wrong/hub" org/ft1 "$FX/ft2"
hf_cache_add "$T/wrong/hub" org/ft2 "$FX/ft1"
inputs_record "$FX" "$T/hub" "$T/hfhome" "$T/home" "$T/wrong"
cd "$T" || hard_error "cd $T"
HOME=$T/nohome
export HOME

ARGS="--method dare_ties -p 0.9 --seed 7"
say "== reference merge by paths"
ds_merge "$T/by-path" --quiet --base "$FX/base" --model "$FX/ft1" \
	--model "$FX/ft2" $ARGS

# same_merge DIR: shards and index equal to the merge by paths.
same_merge() {
	ds_same=yes
	for ds_f in "$T"/by-path/*.safetensors \
		"$T/by-path/model.safetensors.index.json"; do
		cmp "$ds_f" "$1/$(basename "$ds_f")" || ds_same=no
	done
	[ "$ds_same" = yes ]
}

# by_id NAME: merge org/base + org/ft1 + org/ft2 in the environment set up
# by the caller; compare with the merge by paths.
by_id() {
	if ds_merge "$T/$1" --quiet --base org/base --model org/ft1 \
		--model org/ft2 $ARGS; then
		check "$1: same shards and index as by paths" same_merge "$T/$1"
		xxh_check "$T/$1"
	fi
}

say "== HF_HUB_CACHE"
HF_HUB_CACHE=$T/hub
export HF_HUB_CACHE
by_id hub-cache
say "== HF_HUB_CACHE wins over HF_HOME"
HF_HOME=$T/wrong
export HF_HOME
by_id hub-cache-over-home
unset HF_HUB_CACHE HF_HOME

say "== HF_HOME/hub"
HF_HOME=$T/hfhome
export HF_HOME
by_id hf-home
unset HF_HOME

say "== ~/.cache/huggingface/hub"
HOME=$T/home
by_id home-cache

say "== ids and paths mixed"
HF_HUB_CACHE=$T/hub
export HF_HUB_CACHE
if ds_merge "$T/mixed" --quiet --base "$FX/base" --model org/ft1 \
	--model "$FX/ft2" $ARGS; then
	check "mixed: same shards and index as by paths" same_merge "$T/mixed"
fi

say "== inspect by id"
run_expect 0 "" "$DS_BIN" inspect org/base
check "inspect org/base lists lm_head.weight" grep -q 'lm_head\.weight' \
	"$T/stdout"

say "== a missing id is an error that says how to download it"
run_expect 3 'huggingface-cli' "$DS_BIN" merge -o "$T/missing" \
	--base org/base --model org/nope --model org/ft2 $ARGS
stderr_has "the message names the id" 'org/nope'
no_output "$T/missing"
unset HF_HUB_CACHE
HOME=$T/nohome
run_expect 3 'huggingface-cli' "$DS_BIN" inspect org/base

say "== output inside the cache is refused"
HF_HUB_CACHE=$T/hub
export HF_HUB_CACHE
snap=$(find "$T/hub/models--org--base/snapshots" -mindepth 1 -maxdepth 1 |
	head -n 1)
run_expect 4 'dare-stream: error:' "$DS_BIN" merge -o "$snap/out" \
	--base org/base --model org/ft1 $ARGS
check "nothing created in the snapshot" test ! -e "$snap/out"

ds_finish
