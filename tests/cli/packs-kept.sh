#!/bin/sh
# SPDX-License-Identifier: MIT
# packs-kept.sh - merges of packs whose masks are the merge's, over frames
#
# A pack read as model j with the merge's own mask (seed, p, J = j) goes to
# the kernel as its mask and kept values; any other pack is rebuilt into a
# full window first.  Both must give the bytes of the merge of the full
# models (DESIGN 7): here with tensors of several frames whose sizes are
# not multiples of 64, windows of one frame and of several, 1 and 2
# threads, base and models of different dtypes, p = 0, and packs of both
# kinds in one merge.  A pack read with another mask is checked against
# the model it stands for, written out independently (dsref's Philox).
# shellcheck disable=SC2086
# shellcheck source=lib.sh
. "${DS_TESTLIB:-$(dirname "$0")/lib.sh}"
ds_setup packs-kept
need_python

FX=$T/fx
P=$T/packs
mkdir -p "$P"
# embed_tokens and lm_head: 1001 x 200 = 200200 elements, 3 frames and a
# part of 3080; the MLP: 120000 elements, a frame and a part.
mkfix "$FX" --models 3 --seed 41 --layers 1 --hidden 200 --vocab 1001 \
	--dtypes bf16,bf16,f16,f32 --int-tensor
inputs_record "$FX"

same_shards() {
	for ds_f in "$1"/*.safetensors; do
		cmp -s "$ds_f" "$2/$(basename "$ds_f")" || return 1
	done
}

extract() {
	run "$DS_BIN" extract -q "$@"
	if [ "$ds_rc" -ne 0 ]; then
		fail "extract $* exited $ds_rc"
		show_output
		return 1
	fi
	ok "extract $(echo "$*" | sed 's/.*-o //')"
}

for j in 1 2 3; do
	extract --base "$FX/base" --model "$FX/ft$j" -p 0.9 --seed 7 \
		--stream $((j - 1)) -o "$P/ft$j.dsd"
done
packs="--model $P/ft1.dsd --model $P/ft2.dsd --model $P/ft3.dsd"
full="--model $FX/ft1 --model $FX/ft2 --model $FX/ft3"

say "== three packs with the merge's masks: the bytes of the full models"
for m in dare_ties dare_linear; do
	ds_merge "$T/full-$m" -q --base "$FX/base" $full --method "$m" \
		-p 0.9 --seed 7
	ref_check "$T/full-$m" --base "$FX/base" $full --method "$m" \
		-p 0.9 --seed 7
	# 64M: windows of whole tensors (4 frames); 6M: windows of one frame
	for run in "--threads 1" "--threads 2 --memory 6M" \
		"--threads 1 --memory 6M --io pread"; do
		ds_merge "$T/out" -q --force --base "$FX/base" $packs \
			--method "$m" -p 0.9 --seed 7 $run
		check "$m, $run: the bytes of the full models" \
			same_shards "$T/full-$m" "$T/out"
	done
done
ds_merge "$T/packs-w" -q --base "$FX/base" $packs --method dare_ties \
	-p 0.9 --seed 7 --weights 0.5,-1.25,2 --lambda 0.75 --normalize
ds_merge "$T/full-w" -q --base "$FX/base" $full --method dare_ties \
	-p 0.9 --seed 7 --weights 0.5,-1.25,2 --lambda 0.75 --normalize
check "weights, lambda, normalize: the bytes of the full models" \
	same_shards "$T/full-w" "$T/packs-w"

say "== p = 0 keeps every value"
extract --base "$FX/base" --model "$FX/ft2" -p 0 --seed 7 -o "$P/p0.dsd"
ds_merge "$T/p0-full" -q --base "$FX/base" --model "$FX/ft2" \
	--method dare_linear -p 0 --seed 7
ds_merge "$T/p0-pack" -q --base "$FX/base" --model "$P/p0.dsd" \
	--method dare_linear -p 0 --seed 7
check "p = 0: the bytes of the full model" same_shards "$T/p0-full" "$T/p0-pack"

say "== a pack with another mask stands for base + its kept values"
# expanded SEED STREAM P PACKDIR: the model ft1 stands for as a pack with
# that mask: ft1's bytes where the mask keeps, the base's elsewhere (both
# BF16), every tensor of ft1's files rewritten in place.
expanded() {
	cp -r "$FX/ft1" "$4"
	"$PYTHON3" - "$DS_REF" "$FX/base" "$4" "$1" "$2" "$3" <<'EOF' ||
import importlib.util, sys
spec = importlib.util.spec_from_file_location("dsref", sys.argv[1])
r = importlib.util.module_from_spec(spec)
spec.loader.exec_module(r)
base, out = r.Model(sys.argv[2]), r.Model(sys.argv[3])
seed, stream, p = int(sys.argv[4]), int(sys.argv[5]), float(sys.argv[6])
thr = r.drop_threshold(p)
for name, t in out.tensors.items():
    if t.dtype != "BF16":
        continue
    b, x = base.tensors[name].read(), bytearray(t.read())
    u = r.philox_u(seed, stream, r.xxh32(name.encode()), 0, t.numel)
    for i, ui in enumerate(u):
        if ui < thr:
            x[2 * i:2 * i + 2] = b[2 * i:2 * i + 2]
    with open(t.path, "r+b") as f:
        f.seek(t.start)
        f.write(x)
EOF
	hard_error "could not write the expanded model $4"
}
# ft1 as model 0 from a pack of stream 1, then of p 0.8; ft2's pack has
# the merge's mask, ft3 is a full model.
extract --base "$FX/base" --model "$FX/ft1" -p 0.9 --seed 7 --stream 1 \
	-o "$P/j1.dsd"
extract --base "$FX/base" --model "$FX/ft1" -p 0.8 --seed 7 -o "$P/p8.dsd"
expanded 7 1 0.9 "$T/e-j1"
expanded 7 0 0.8 "$T/e-p8"
for c in j1 p8; do
	run_expect 0 "differs from merging the full model" "$DS_BIN" merge \
		-o "$T/mixed-$c" --base "$FX/base" --model "$P/$c.dsd" \
		--model "$P/ft2.dsd" --model "$FX/ft3" --method dare_ties \
		-p 0.9 --seed 7 --memory 6M --threads 2
	ds_merge "$T/ref-$c" -q --base "$FX/base" --model "$T/e-$c" \
		--model "$FX/ft2" --model "$FX/ft3" --method dare_ties -p 0.9 \
		--seed 7
	check "$c: the bytes of the model the pack stands for" \
		same_shards "$T/ref-$c" "$T/mixed-$c"
done

# The 64th model, the most a merge takes, read from a pack: input 64 of
# the pipeline has its frame buffers like every other.
say "== a pack as the 64th model"
mkfix "$T/m64" --models 64 --seed 12 --layers 1 --hidden 16 --vocab 32 \
	--shards 1
extract --base "$T/m64/base" --model "$T/m64/ft64" -p 0.5 --stream 63 \
	-o "$P/ft64.dsd"
M63=
for j in $(seq 63); do M63="$M63 --model $T/m64/ft$j"; done
if ds_merge "$T/o64p" -q --base "$T/m64/base" $M63 --model "$P/ft64.dsd" \
	--method dare_ties -p 0.5 &&
	ds_merge "$T/o64f" -q --base "$T/m64/base" $M63 --model "$T/m64/ft64" \
		--method dare_ties -p 0.5; then
	check "64 models, the last a pack: the bytes of the full models" \
		same_shards "$T/o64f" "$T/o64p"
fi

ds_finish
