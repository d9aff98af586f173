#!/bin/sh
# SPDX-License-Identifier: MIT
# merge-methods.sh - every method and merge option, bit-exact against dsref.py
#
# Each case merges real safetensors fixtures with the CLI, then the
# independent reference recomputes every output tensor (0 ULP allowed),
# checks the directory's format rules and xxh128sum -c verifies it.
# Word-list variables (ARGS, MERGE, M) are split on purpose; functions
# run through check look unreachable to shellcheck.
# shellcheck disable=SC2086,SC2317
# shellcheck source=lib.sh
. "${DS_TESTLIB:-$(dirname "$0")/lib.sh}"
ds_setup merge-methods
need_python

FX=$T/fx           # BF16, 2 shards, 2 fine-tunes
FXM=$T/fx-mixed    # base BF16, ft1 F16, ft2 F32
FXE=$T/fx-extra    # fine-tunes with 8 added tokens
FXI=$T/fx-int      # an I64 tensor in every model
FX1=$T/fx-single   # model.safetensors, no index
FXH=$T/fx-f16      # F16 everywhere
say "== fixtures"
mkfix "$FX" --models 2 --seed 11
# One layer is enough for the variants (the reference is slow Python).
mkfix "$FXM" --models 2 --seed 12 --layers 1 --dtypes bf16,f16,f32
mkfix "$FXE" --models 2 --seed 13 --layers 1 --extra-vocab 8
mkfix "$FXI" --models 2 --seed 14 --layers 1 --int-tensor
mkfix "$FX1" --models 2 --seed 15 --layers 1 --shards 1 --dtype f32
mkfix "$FXH" --models 2 --seed 16 --layers 1 --dtype f16 --delta-scale 0.0005
inputs_record "$FX" "$FXM" "$FXE" "$FXI" "$FX1" "$FXH"

n=0
# case FIXTURE ARGS...: merge with ARGS, then the reference with the same
# ARGS (dsref.py check takes the merge options of dare-stream merge).
case_() {
	fx=$1
	shift
	n=$((n + 1))
	out=$T/out$n
	say "== case $n: $(basename "$fx") $*"
	ds_merge "$out" --quiet --base "$fx/base" --model "$fx/ft1" \
		--model "$fx/ft2" "$@" || return 1
	ref_check "$out" --base "$fx/base" --model "$fx/ft1" \
		--model "$fx/ft2" "$@"
	ref_validate "$out"
	xxh_check "$out"
}

# same_tensors A B [NAME]: equal tensor lists (name, dtype, shape, shard,
# bytes, sha256), or one tensor's dtype, shape and sha256.
same_tensors() {
	if [ -n "${3:-}" ]; then
		ds_a=$(tensor_sum "$1" "$3")
		ds_b=$(tensor_sum "$2" "$3")
		[ -n "$ds_a" ] && [ "$ds_a" = "$ds_b" ]
	else
		ref list "$1" >"$T/list.a" && ref list "$2" >"$T/list.b" &&
			cmp -s "$T/list.a" "$T/list.b"
	fi
}

same_shards() {
	for ds_f in "$1"/*.safetensors; do
		cmp -s "$ds_f" "$2/$(basename "$ds_f")" || return 1
	done
}

say "== the four methods, defaults"
case_ "$FX" --method linear
case_ "$FX" --method task_arithmetic
case_ "$FX" --method dare_linear -p 0.5
case_ "$FX" --method dare_ties -p 0.9
say "== method given by default (dare_linear)"
case_ "$FX" -p 0.3

say "== mixed input dtypes"
case_ "$FXM" --method dare_ties -p 0.7 --dtype f32
case_ "$FXM" --method dare_linear -p 0.3 --dtype f16
case_ "$FXM" --method task_arithmetic
case_ "$FXM" --method linear --dtype f32
say "== F16 and F32 fixtures (subnormals in F16)"
case_ "$FXH" --method dare_ties -p 0.8
case_ "$FXH" --method task_arithmetic --dtype bf16
case_ "$FX1" --method dare_linear -p 0.6 --dtype bf16
case_ "$FX1" --method linear

say "== weights, lambda, normalize, rescale"
case_ "$FX" --method dare_linear -p 0.5 --weights 0.7,0.3
case_ "$FX" --method task_arithmetic --weights 1.5,-0.5
case_ "$FX" --method dare_ties -p 0.5 --weight 0.6
case_ "$FX" --method dare_ties -p 0.9 --lambda 0.5
case_ "$FX" --method task_arithmetic --lambda 2.5 --weights 0.3,0.9
case_ "$FX" --method dare_linear -p 0.5 --normalize --weights 0.6,0.2
case_ "$FX" --method dare_ties -p 0.9 --normalize --weights 0.3,0.6
case_ "$FX" --method linear --no-normalize --weights 0.5,0.25
case_ "$FX" --method linear --weights 3,1
case_ "$FX" --method dare_linear -p 0.5 --rescale none
case_ "$FX" --method dare_ties -p 0.9 --rescale none --normalize
case_ "$FX" --method dare_linear --drop-rates 0.3,0.8
case_ "$FX" --method dare_ties --densities 0.5,0.1 --lambda 1.5

say "== seeds"
case_ "$FX" --method dare_ties -p 0.5 --seed 0x123456789abcdef0
s1=$out
case_ "$FX" --method dare_ties -p 0.5 --seed 1
check "another seed gives another mask" not same_shards "$s1" "$out"

say "== -p 0.9 and --density 0.1 are the same merge"
case_ "$FX" --method dare_linear -p 0.9 --seed 3
a=$out
case_ "$FX" --method dare_linear --density 0.1 --seed 3
check "-p 0.9 and --density 0.1 give identical shards" same_shards "$a" "$out"

say "== p = 1 drops every delta: the base comes back"
case_ "$FX" --method dare_ties -p 1
check "dare_ties -p 1: every tensor equals the base's" \
	same_tensors "$out" "$FX/base"
case_ "$FX" --method dare_linear -p 1 --lambda 3
check "dare_linear -p 1: every tensor equals the base's" \
	same_tensors "$out" "$FX/base"

say "== fine-tunes with added tokens (more embedding rows)"
case_ "$FXE" --method dare_ties -p 0.9
case_ "$FXE" --method linear
case_ "$FXE" --method task_arithmetic --dtype f32

say "== non-float tensor copied from the base"
case_ "$FXI" --method dare_linear -p 0.5
check "model.position_ids equals the base's bytes" \
	same_tensors "$out" "$FXI/base" model.position_ids
case_ "$FXI" --method linear --dtype f32
check "model.position_ids stays I64 with --dtype f32" \
	same_tensors "$out" "$FXI/base" model.position_ids

say "== an F64 tensor is copied from the base, with a notice naming it"
cp -R "$FXI" "$T/fx-f64"
for s in "$T"/fx-f64/*/*.safetensors; do
	st_edit "$s" 'if "model.position_ids" in h:
    h["model.position_ids"]["dtype"] = "F64"'
done
F64=$T/fx-f64
inputs_record "$F64"
if ds_merge "$T/out-f64" --base "$F64/base" --model "$F64/ft1" \
	--model "$F64/ft2" --method dare_ties -p 0.5; then
	stderr_has "one notice names F64 and model.position_ids" \
		'dare-stream: .*copied from the base unchanged.*F64: 1 ..model\.position_ids'
	check "model.position_ids (F64) equals the base's bytes" \
		same_tensors "$T/out-f64" "$F64/base" model.position_ids
	ref_check "$T/out-f64" --base "$F64/base" --model "$F64/ft1" \
		--model "$F64/ft2" --method dare_ties -p 0.5
fi

say "== special values: NaN, infinities, overflow, subnormals, signed zeros"
# specials DIR: the first 16 elements of q_proj in layer 0 of base, ft1
# and ft2 become these binary32 patterns (upper halves for BF16 files).
specials() {
	py '
import struct
d = sys.argv[1]
Z, NZ, ONE, TWO = 0, 0x80000000, 0x3F800000, 0x40000000
NAN, PINF, NINF = 0x7FC10000, 0x7F800000, 0xFF800000
MAX, NMAX, SUB, NSUB = 0x7F7F0000, 0xFF7F0000, 0x00010000, 0x80010000
rows = [(Z, NAN, ONE), (Z, PINF, ONE), (Z, NINF, PINF), (PINF, PINF, Z),
        (NMAX, MAX, MAX), (Z, SUB, SUB), (NZ, NZ, NZ), (Z, NZ, Z),
        (NAN, ONE, TWO), (SUB, NSUB, Z), (MAX, MAX, NMAX), (ONE, NMAX, MAX),
        (NZ, Z, NZ), (Z, NAN, NINF), (PINF, NINF, PINF), (NSUB, SUB, NSUB)]
name = "model.layers.0.self_attn.q_proj.weight"
for col, m in enumerate(("base", "ft1", "ft2")):
    for f in sorted(os.listdir(os.path.join(d, m))):
        if not f.endswith(".safetensors"):
            continue
        p = os.path.join(d, m, f)
        with open(p, "r+b") as fh:
            n = struct.unpack("<Q", fh.read(8))[0]
            t = json.loads(fh.read(n)).get(name)
            if t is None:
                continue
            fh.seek(8 + n + t["data_offsets"][0])
            for r in rows:
                if t["dtype"] == "BF16":
                    fh.write(struct.pack("<H", r[col] >> 16))
                else:
                    fh.write(struct.pack("<I", r[col]))' "$1"
}
cp -R "$FX" "$T/fx-sp16"
cp -R "$FX1" "$T/fx-sp32"
specials "$T/fx-sp16"
specials "$T/fx-sp32"
inputs_record "$T/fx-sp16" "$T/fx-sp32"
for sp in "$T/fx-sp16" "$T/fx-sp32"; do
	case_ "$sp" --method linear
	case_ "$sp" --method task_arithmetic --weights 0.5,2
	case_ "$sp" --method dare_linear -p 0.5 --dtype f16
	case_ "$sp" --method dare_ties -p 0.3
	case_ "$sp" --method dare_ties -p 0 --normalize --dtype f32
done

say "== --exclude copies matching tensors from the base"
case_ "$FX" --method dare_ties -p 0.9 --exclude 'lm_head*'
check "lm_head.weight equals the base's" \
	same_tensors "$out" "$FX/base" lm_head.weight
check "model.embed_tokens.weight is merged" \
	not same_tensors "$out" "$FX/base" model.embed_tokens.weight
case_ "$FX" --method task_arithmetic --exclude 'lm_head*' \
	--exclude '*.norm.weight' --dtype f32
check "--dtype f32 leaves excluded lm_head.weight as the base's BF16" \
	same_tensors "$out" "$FX/base" lm_head.weight

ds_finish
