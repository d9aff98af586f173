#!/bin/sh
# SPDX-License-Identifier: MIT
# direct.sh - direct reads (O_DIRECT) give the bytes buffered reads give
#
# Cold inputs are read with O_DIRECT where the file system takes it, each
# window widened to 4 KiB blocks; a window that ends a file in a partial
# block reads that block buffered, one that lies inside a single block is
# read buffered whole, and one whose bytes are not aligned to its element
# size is read buffered.  Models built here have each case: tensors at
# offsets that are not block-aligned, a BF16 tensor of 4099 elements that
# leaves the next F32 tensor at an offset of 2 mod 4, and a tensor of 3
# elements that ends the file inside one block.  The same merges from a
# copy on tmpfs (which refuses O_DIRECT, so everything is read buffered)
# must give the same bytes, and the reference recomputes both.  Delta
# packs of the fine-tunes, read direct, give the merge of the full models.
# shellcheck source=lib.sh
. "${DS_TESTLIB:-$(dirname "$0")/lib.sh}"
ds_setup direct
need_python

# model DIR SEED: one shard, tensors a (BF16, 4099), b (F32, 1000),
# c (BF16, 70000), d (BF16, 3) in file order
model() {
	mkdir -p "$1"
	py '
import random, struct
d, seed = sys.argv[1], int(sys.argv[2])
rnd = random.Random(seed)
def bf16(x):
    b = struct.pack("<f", x)
    return b[2:4]
spec = [("a.weight", "BF16", 4099), ("b.weight", "F32", 1000),
        ("c.weight", "BF16", 70000), ("d.weight", "BF16", 3)]
h, data = {}, b""
for name, dt, n in spec:
    vals = [rnd.gauss(0, 0.02) for _ in range(n)]
    if dt == "BF16":
        raw = b"".join(bf16(v) for v in vals)
    else:
        raw = struct.pack("<%df" % n, *vals)
    h[name] = {"dtype": dt, "shape": [n],
               "data_offsets": [len(data), len(data) + len(raw)]}
    data += raw
t = json.dumps(h, separators=(",", ":")).encode()
t += b" " * (-(8 + len(t)) % 8)
with open(os.path.join(d, "model.safetensors"), "wb") as f:
    f.write(struct.pack("<Q", len(t)) + t + data)
with open(os.path.join(d, "config.json"), "w") as f:
    json.dump({"architectures": ["LlamaForCausalLM"]}, f)
' "$1" "$2"
}

model "$T/m/base" 1
model "$T/m/ft1" 2
model "$T/m/ft2" 3

# cold: the models leave the page cache (a cached input is read
# buffered, as the merge leaves the cache as it found it)
cold() {
	sync
	evict "$@"
}
size=$(stat -c %s "$T/m/base/model.safetensors")
check "the file ends inside a block ($size bytes)" [ $((size % 4096)) -ne 0 ]

SHM=${DS_SHM:-/dev/shm}
if [ -d "$SHM" ] && [ -w "$SHM" ] &&
	S=$(mktemp -d "$SHM/ds-direct.XXXXXX" 2>/dev/null); then
	trap 'rm -rf "$S"; ds_cleanup' EXIT
	cp -r "$T/m/base" "$T/m/ft1" "$T/m/ft2" "$S"/
else
	S=
	say "  no tmpfs at $SHM: the buffered copy is not compared"
fi

if command -v strace >/dev/null 2>&1; then
	strace -f -e trace=openat -o "$T/strace" "$DS_BIN" merge -q \
		-o "$T/probe" --method linear --base "$T/m/base" \
		--model "$T/m/ft1" >/dev/null 2>&1
	if grep -q 'O_DIRECT' "$T/strace"; then
		ok "inputs on $(stat -f -c %T "$T") are opened O_DIRECT"
	else
		say "  $(stat -f -c %T "$T") does not take O_DIRECT here:" \
			"both merges read buffered"
	fi
fi

for meth in "linear" "dare_ties -p 0.6 --seed 5" "ties -p 0.5"; do
	# 4M: c.weight in two windows, the second ending past a block
	for mem in 64M 4M; do
		# shellcheck disable=SC2086
		set -- --method $meth
		name=$(echo "$meth-$mem" | tr -c 'a-z0-9\n' '_')
		cold "$T"/m/*/model.safetensors
		if ds_merge "$T/o-$name" --quiet --memory "$mem" "$@" \
			--base "$T/m/base" --model "$T/m/ft1" --model "$T/m/ft2"
		then
			ref_check "$T/o-$name" "$@" --base "$T/m/base" \
				--model "$T/m/ft1" --model "$T/m/ft2"
		fi
		[ -n "$S" ] || continue
		ds_merge "$T/s-$name" --quiet --memory "$mem" "$@" \
			--base "$S/base" \
			--model "$S/ft1" --model "$S/ft2" &&
			check "$meth, --memory $mem: the same bytes from tmpfs" \
				cmp "$T/o-$name/model.safetensors" \
				"$T/s-$name/model.safetensors"
	done
done

say "== delta packs: their frames are read direct too"
for j in 1 2; do
	"$DS_BIN" extract -q --base "$T/m/base" --model "$T/m/ft$j" -p 0.6 \
		--seed 5 --stream $((j - 1)) -o "$T/m/ft$j.dsd" ||
		hard_error "extract of ft$j failed"
	[ -z "$S" ] || cp "$T/m/ft$j.dsd" "$S"/
done
for mem in 64M 4M; do
	cold "$T"/m/base/model.safetensors "$T"/m/*.dsd
	ds_merge "$T/p-$mem" --quiet --memory "$mem" --method dare_ties \
		-p 0.6 --seed 5 --base "$T/m/base" --model "$T/m/ft1.dsd" \
		--model "$T/m/ft2.dsd" &&
		check "--memory $mem: packs give the merge of the full models" \
			cmp "$T/o-dare_ties__p_0_6___seed_5_$(echo "$mem" |
			tr -c 'a-z0-9\n' '_')/model.safetensors" \
			"$T/p-$mem/model.safetensors"
	[ -n "$S" ] || continue
	ds_merge "$T/sp-$mem" --quiet --memory "$mem" --method dare_ties \
		-p 0.6 --seed 5 --base "$S/base" --model "$S/ft1.dsd" \
		--model "$S/ft2.dsd" &&
		check "--memory $mem: the same bytes from packs on tmpfs" \
			cmp "$T/p-$mem/model.safetensors" \
			"$T/sp-$mem/model.safetensors"
done

ds_finish
