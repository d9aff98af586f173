#!/bin/sh
# SPDX-License-Identifier: MIT
# packs.sh - DARE delta packs: extract, apply, merges that read packs,
# damaged packs refused, sizes
#
# apply(extract(M)) must be byte for byte the dare_linear merge of M with
# the same p and seed (DESIGN 7), a merge of packs the same merge of the
# full models, and every damaged pack a clear error before any output.
# shellcheck disable=SC2086
# shellcheck source=lib.sh
. "${DS_TESTLIB:-$(dirname "$0")/lib.sh}"
ds_setup packs
need_python

P=$T/packs
mkdir -p "$P"

# packread PACK BASE MODEL: tests/ref/packread.py, a reader written from
# dare-stream-pack(5) alone (zstd and xxhsum for the frames), finds in
# PACK the model's kept values and the base's digests.
packread() {
	if ! command -v zstd >/dev/null || ! command -v xxhsum >/dev/null; then
		say "skip the independent pack reader: no zstd or xxhsum program"
		return 0
	fi
	run "$PYTHON3" "$(dirname "$DS_REF")/packread.py" "$@"
	check "$(basename "$1") read by the man page alone: $(cat "$T/stdout" \
		"$T/stderr")" [ "$ds_rc" -eq 0 ]
}

same_shards() {
	for ds_f in "$1"/*.safetensors; do
		cmp -s "$ds_f" "$2/$(basename "$ds_f")" || return 1
	done
}

extract() {
	run "$DS_BIN" extract "$@"
	if [ "$ds_rc" -ne 0 ]; then
		fail "extract $* exited $ds_rc"
		show_output
		return 1
	fi
	ok "extract $(echo "$*" | sed 's/.*-o //')"
}

say "== round trips: apply(extract(M)) is the dare_linear merge of M"
for dt in bf16 f16 f32; do
	fx=$T/fx-$dt
	mkfix "$fx" --models 2 --seed 31 --layers 1 --dtype "$dt"
	inputs_record "$fx"
	extract --base "$fx/base" --model "$fx/ft1" -p 0.9 --seed 5 \
		-o "$P/$dt.dsd" || continue
	run_expect 0 "" "$DS_BIN" apply --base "$fx/base" "$P/$dt.dsd" \
		-o "$T/apply-$dt" -q
	ds_merge "$T/merge-$dt" -q --base "$fx/base" --model "$fx/ft1" \
		--method dare_linear -p 0.9 --seed 5
	check "$dt: apply gives the bytes of the merge" \
		same_shards "$T/merge-$dt" "$T/apply-$dt"
	ref_check "$T/apply-$dt" --base "$fx/base" --model "$fx/ft1" \
		--method dare_linear -p 0.9 --seed 5
	ref_validate "$T/apply-$dt"
	packread "$P/$dt.dsd" "$fx/base" "$fx/ft1"
done
FX=$T/fx-bf16

say "== tensors of several frames, and one stored whole, read from the man page"
WIDE=$T/fx-wide
mkfix "$WIDE" --models 1 --seed 41 --layers 1 --hidden 256 --vocab 1024 \
	--int-tensor
extract --base "$WIDE/base" --model "$WIDE/ft1" -p 0.9 --seed 7 \
	-o "$P/wide.dsd"
packread "$P/wide.dsd" "$WIDE/base" "$WIDE/ft1"

say "== a pack keeps its stream: extract --stream 3, apply, rerun its recipe"
extract --base "$FX/base" --model "$FX/ft2" -p 0.8 --seed 9 --stream 3 \
	-o "$P/j3.dsd"
run_expect 0 "" "$DS_BIN" apply --base "$FX/base" "$P/j3.dsd" -o "$T/j3" -q
packread "$P/j3.dsd" "$FX/base" "$FX/ft2"
check "dare-stream.yml records the stream" grep -q 'stream: 3' \
	"$T/j3/dare-stream.yml"
ds_merge "$T/j3b" -q --config "$T/j3/dare-stream.yml"
check "rerunning that recipe gives the same bytes" same_shards "$T/j3" "$T/j3b"

say "== merges reading packs equal merges of the full models"
extract --base "$FX/base" --model "$FX/ft2" -p 0.9 --seed 5 --stream 1 \
	-o "$P/ft2.dsd"
for m in dare_ties dare_linear; do
	ds_merge "$T/full-$m" -q --base "$FX/base" --model "$FX/ft1" \
		--model "$FX/ft2" --method "$m" -p 0.9 --seed 5
	ds_merge "$T/packs-$m" -q --base "$FX/base" --model "$P/bf16.dsd" \
		--model "$P/ft2.dsd" --method "$m" -p 0.9 --seed 5 \
		--threads 2 --memory 2M
	check "$m: two packs give the bytes of the two models" \
		same_shards "$T/full-$m" "$T/packs-$m"
done
ds_merge "$T/mixed" -q --base "$FX/base" --model "$FX/ft1" \
	--model "$P/ft2.dsd" --method dare_ties -p 0.9 --seed 5 --io pread
check "a model and a pack, pread backend: the same bytes" \
	same_shards "$T/full-dare_ties" "$T/mixed"

say "== a pack read with another mask says so"
run_expect 0 "delta pack of seed 5.*differs from merging the full model" \
	"$DS_BIN" merge -o "$T/other" --base "$FX/base" --model "$P/bf16.dsd" \
	--method dare_linear -p 0.5 --seed 5

say "== inspect lists a pack's tensors"
run_expect 0 "" "$DS_BIN" inspect "$P/bf16.dsd"
check "inspect names every tensor of ft1" py '
import subprocess
got = {l.split()[0] for l in open(sys.argv[1]) if l.startswith("  ")}
want = {l.split("\t")[0] for l in subprocess.check_output(
    [sys.executable, sys.argv[2], "list", sys.argv[3]], text=True).splitlines()}
got.discard("total"); got.discard("total:"); want.discard("total")
assert got == want, (got ^ want)
' "$T/stdout" "$DS_REF" "$FX/ft1"

say "== damaged packs are refused before any output"
# bad PATTERN FILE: merging FILE fails with exit 3 and PATTERN, nothing out.
n=0
bad() {
	n=$((n + 1))
	run_expect 3 "$1" "$DS_BIN" merge -o "$T/bad$n" --base "$FX/base" \
		--model "$2" --method dare_linear -p 0.9 --seed 5
	no_output "$T/bad$n"
}
run_expect 3 "made from another base" "$DS_BIN" apply --base "$FX/ft2" \
	"$P/bf16.dsd" -o "$T/wrongbase"
no_output "$T/wrongbase"
# Offsets from the footer: header offset, header length, frames.
edit() { # edit SRC DST CODE: CODE on bytearray b of SRC, written to DST
	py 'b = bytearray(open(sys.argv[1], "rb").read())
import struct
H, L, F = struct.unpack("<QQQ", bytes(b[-32:-8]))
'"$3"'
open(sys.argv[2], "wb").write(b)' "$1" "$2"
}
edit "$P/bf16.dsd" "$P/trunc.dsd" 'b = b[:len(b) // 2]'
bad "not a valid dare-stream pack" "$P/trunc.dsd"
edit "$P/bf16.dsd" "$P/flip.dsd" 'b[16 + 16 * F + 40] ^= 0x10'
bad "frame [0-9]+ is damaged" "$P/flip.dsd"
edit "$P/bf16.dsd" "$P/seek.dsd" 'b[16 + 16 * 2:16 + 16 * 2 + 8] = struct.pack("<Q", H + 1000)'
bad "seek table entry 2 points outside the frames" "$P/seek.dsd"
edit "$P/bf16.dsd" "$P/ver.dsd" 'b[8] = 2'
bad "pack version 2" "$P/ver.dsd"
edit "$P/bf16.dsd" "$P/hdr.dsd" 'b[H:H + 1] = b"["'
bad "the header is not JSON" "$P/hdr.dsd"
edit "$P/bf16.dsd" "$P/magic.dsd" 'b[-1] = 0x41'
bad "no pack magic" "$P/magic.dsd"

say "== sizes: kept values are about 1 - p of the model"
BIG=$T/fx-big
mkfix "$BIG" --models 1 --seed 33 --size 8M --shards 1 --dtype bf16
model_bytes=$(py 'import json, struct
f = open(sys.argv[1], "rb"); n = struct.unpack("<Q", f.read(8))[0]
h = json.loads(f.read(n)); h.pop("__metadata__", None)
print(sum(e["data_offsets"][1] - e["data_offsets"][0] for e in h.values()))' \
	"$BIG/ft1/model.safetensors")
for p in 0.9 0.99; do
	extract --base "$BIG/base" --model "$BIG/ft1" -p "$p" -o "$P/big-$p.dsd" \
		--level 3
	size=$(wc -c <"$P/big-$p.dsd")
	limit=$(py 'print(int(float(sys.argv[1]) * int(sys.argv[2])))' \
		"$(py 'print(1.2e-2 if sys.argv[1] == "0.99" else 0.11)' "$p")" \
		"$model_bytes")
	# Before zstd: the frames region (between the seek table and the
	# header) decompressed by the zstd tool, which reads concatenated
	# frames.
	raw=$(py 'import struct, sys
b = open(sys.argv[1], "rb").read()
H, L, F = struct.unpack("<QQQ", b[-32:-8])
sys.stdout.buffer.write(b[16 + 16 * F:H])' "$P/big-$p.dsd" | zstd -dcq | wc -c)
	say "p $p: $model_bytes bytes of tensors; kept values $raw bytes" \
		"($(py 'print("%.2f%%" % (100 * int(sys.argv[1]) / int(sys.argv[2])))' \
		"$raw" "$model_bytes")), pack file $size bytes" \
		"($(py 'print("%.2f%%" % (100 * int(sys.argv[1]) / int(sys.argv[2])))' \
		"$size" "$model_bytes"))"
	check "p $p: kept values before zstd within the limit ($limit bytes)" \
		test "$raw" -gt 0 -a "$raw" -le "$limit"
done

inputs_verify
ds_finish
