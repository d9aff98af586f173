#!/bin/sh
# SPDX-License-Identifier: MIT
# output.sh - the merged directory: files, copies, index, metadata, recipe
#
# DESIGN 8: shards named like the base's, the index when sharded, the base's
# non-weight files byte for byte, dare-stream.yml, CHECKSUMS.xxh128 that
# xxh128sum -c accepts, "format": "pt" and the version in __metadata__.
# Word-list variables (ARGS, MERGE, M) are split on purpose; functions
# run through check look unreachable to shellcheck.
# shellcheck disable=SC2086,SC2317
# shellcheck source=lib.sh
. "${DS_TESTLIB:-$(dirname "$0")/lib.sh}"
ds_setup output
need_python

FX=$T/fx
FX1=$T/fx1
say "== fixtures: sharded (with an I64 tensor) and single-file"
mkfix "$FX" --models 2 --seed 41 --int-tensor
mkfix "$FX1" --models 2 --seed 42 --shards 1
inputs_record "$FX" "$FX1"
B=$FX/base
ARGS="--base $B --model $FX/ft1 --model $FX/ft2 --method dare_ties -p 0.9"
NONWEIGHT="config.json generation_config.json tokenizer_config.json tokenizer.json"

version=$("$DS_BIN" --version 2>/dev/null | grep -Eo '[0-9]+\.[0-9]+\.[0-9]+' |
	head -n 1)

# files_are DIR NAME...: DIR holds exactly these files.
files_are() {
	ds_d=$1
	shift
	printf '%s\n' "$@" | sort >"$T/want"
	(cd "$ds_d" && ls -A) | sort >"$T/have"
	if cmp -s "$T/want" "$T/have"; then
		ok "files: $(tr '\n' ' ' <"$T/have")"
	else
		fail "files of $(basename "$ds_d") differ (< expected, > found)"
		diff "$T/want" "$T/have" | grep '^[<>]' | sed 's/^/  /'
	fi
}

# copies_ok BASE OUT: the non-weight files are byte-identical copies.
copies_ok() {
	for f in $NONWEIGHT; do
		check "$f copied byte for byte" cmp "$1/$f" "$2/$f"
	done
}

# metadata_ok DIR: every shard's __metadata__ has format pt and the version.
metadata_ok() {
	if py '
import struct
d, ver = sys.argv[1], sys.argv[2]
bad = []
for f in sorted(os.listdir(d)):
    if not f.endswith(".safetensors"):
        continue
    with open(os.path.join(d, f), "rb") as fh:
        n = struct.unpack("<Q", fh.read(8))[0]
        meta = json.loads(fh.read(n)).get("__metadata__", {})
    fmt = meta.get("format")
    if fmt != "pt":
        bad.append(f"{f}: format {fmt!r}")
    if ver and not any(ver in str(v) for v in meta.values()):
        bad.append(f"{f}: version {ver} not in {meta}")
print("\n".join(bad))
sys.exit(1 if bad else 0)' "$1" "$version" >"$T/meta.out" 2>&1; then
		ok "__metadata__: format pt${version:+, version $version}"
	else
		fail "__metadata__"
		sed 's/^/  > /' "$T/meta.out"
	fi
}

# same_weight_map A B: the two indexes map the same tensors to the same
# shard names.
same_weight_map() {
	py '
a, b = (json.load(open(p))["weight_map"] for p in sys.argv[1:3])
sys.exit(a != b)' "$1/model.safetensors.index.json" \
		"$2/model.safetensors.index.json"
}

say "== sharded base"
OUT=$T/out
if ds_merge "$OUT" --quiet $ARGS; then
	files_are "$OUT" model-00001-of-00002.safetensors \
		model-00002-of-00002.safetensors model.safetensors.index.json \
		$NONWEIGHT dare-stream.yml CHECKSUMS.xxh128
	copies_ok "$B" "$OUT"
	check "index weight_map equals the base's (same layout and names)" \
		same_weight_map "$OUT" "$B"
	ref_validate "$OUT"
	metadata_ok "$OUT"
	check "dare-stream.yml names the method" grep -q dare_ties \
		"$OUT/dare-stream.yml"
	check "dare-stream.yml names the drop rate" grep -q '0\.9' \
		"$OUT/dare-stream.yml"
	xxh_check "$OUT"
	ref_check "$OUT" $ARGS
fi

say "== dare-stream.yml reproduces the merge bit for bit (--config)"
if [ -f "$OUT/dare-stream.yml" ] &&
	ds_merge "$T/again" --quiet --config "$OUT/dare-stream.yml"; then
	for f in "$OUT"/*.safetensors "$OUT/model.safetensors.index.json"; do
		check "$(basename "$f") identical" cmp "$f" "$T/again/$(basename "$f")"
	done
fi

say "== --dtype f32: same shard names and tensor names, twice the bytes"
if ds_merge "$T/out32" --quiet $ARGS --dtype f32; then
	check "index weight_map equals the base's" same_weight_map \
		"$T/out32" "$B"
	ref_validate "$T/out32"
	ref_check "$T/out32" $ARGS --dtype f32
fi

say "== single-file base: model.safetensors, no index"
OUT1=$T/out1
if ds_merge "$OUT1" --quiet --base "$FX1/base" --model "$FX1/ft1" \
	--model "$FX1/ft2" --method task_arithmetic; then
	files_are "$OUT1" model.safetensors $NONWEIGHT dare-stream.yml \
		CHECKSUMS.xxh128
	copies_ok "$FX1/base" "$OUT1"
	ref_validate "$OUT1"
	metadata_ok "$OUT1"
	xxh_check "$OUT1"
	ref_check "$OUT1" --base "$FX1/base" --model "$FX1/ft1" \
		--model "$FX1/ft2" --method task_arithmetic
fi

say "== models given as index and .safetensors files"
if ds_merge "$T/out-files" --quiet \
	--base "$B/model.safetensors.index.json" \
	--model "$FX/ft1/model.safetensors.index.json" \
	--model "$FX/ft2" --method dare_ties -p 0.9; then
	for f in "$OUT"/*.safetensors; do
		check "$(basename "$f") same as with directory arguments" \
			cmp "$f" "$T/out-files/$(basename "$f")"
	done
fi
if ds_merge "$T/out1-file" --quiet --base "$FX1/base/model.safetensors" \
	--model "$FX1/ft1/model.safetensors" --model "$FX1/ft2" \
	--method task_arithmetic; then
	check "model.safetensors same as with directory arguments" \
		cmp "$OUT1/model.safetensors" "$T/out1-file/model.safetensors"
fi

say "== an existing empty OUT is fine without --force"
mkdir "$T/empty"
ds_merge "$T/empty" --quiet $ARGS && xxh_check "$T/empty"

say "== --dry-run plans and writes nothing"
run_expect 0 "" "$DS_BIN" merge -o "$T/dry" $ARGS --dry-run
no_output "$T/dry"
check "--dry-run prints the plan" test -s "$T/stdout"
show_output

say "== --help and --version"
run_expect 0 "" "$DS_BIN" --help
help_ok() { grep -q merge "$T/stdout" && grep -q inspect "$T/stdout"; }
check "--help mentions merge and inspect" help_ok
run_expect 0 "" "$DS_BIN" --version
check "--version prints a version number" test -n "$version"

ds_finish
