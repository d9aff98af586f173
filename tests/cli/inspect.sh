#!/bin/sh
# SPDX-License-Identifier: MIT
# inspect.sh - dare-stream inspect: every tensor with dtype, shape and shard
#
# The text output must show each tensor on a line with its dtype and shape,
# and name the shards; --json must parse and agree with the files (names,
# dtypes, shapes, and bytes and shards where it gives them).
# Word-list variables (ARGS, MERGE, M) are split on purpose; functions
# run through check look unreachable to shellcheck.
# shellcheck disable=SC2086,SC2317
# shellcheck source=lib.sh
. "${DS_TESTLIB:-$(dirname "$0")/lib.sh}"
ds_setup inspect
need_python

FX=$T/fx
say "== fixtures: sharded BF16 with an I64 tensor; single-file F32"
mkfix "$FX" --models 1 --seed 51 --int-tensor --extra-vocab 4
mkfix "$T/fx1" --models 1 --seed 52 --shards 1 --dtype f32
inputs_record "$FX" "$T/fx1"

# text_ok PATH...: each tensor of each PATH (per dsref.py list) has a line
# with its name, dtype and dimensions in order; each shard file is named.
text_ok() {
	for ds_p; do
		ref list "$ds_p" || return 1
	done >"$T/expect"
	ds_bad=0
	while IFS="$(printf '\t')" read -r name dtype shape shard _ _; do
		re_name=$(printf '%s' "$name" | sed 's/\./\\./g')
		re_dims=$(printf '%s' "$shape" | tr -d '[]' | sed 's/,/[^0-9]+/g')
		if ! grep -E "(^|[^A-Za-z0-9_.])$re_name([^A-Za-z0-9_.]|\$)" \
			"$T/stdout" | grep -F "$dtype" |
			grep -Eq "(^|[^0-9])$re_dims([^0-9]|\$)"; then
			say "  no line with $name $dtype $shape"
			ds_bad=1
		fi
		if ! grep -qF "$shard" "$T/stdout"; then
			say "  shard $shard not named"
			ds_bad=1
		fi
	done <"$T/expect"
	return $ds_bad
}

# json_ok PATH...: --json output in $T/stdout against the files.
json_ok() {
	for p; do
		ref list "$p"
	done >"$T/expect"
	py '
exp = {}
for line in open(sys.argv[1]):
    name, dtype, shape, shard, nbytes, _ = line.rstrip("\n").split("\t")
    exp.setdefault(name, []).append(
        (dtype, json.loads(shape), shard, int(nbytes)))
doc = json.load(open(sys.argv[2]))
found = []
def walk(o, key=None):
    if isinstance(o, dict):
        if "dtype" in o and "shape" in o:
            found.append((o.get("name", key), o))
            return
        for k, v in o.items():
            walk(v, k)
    elif isinstance(o, list):
        for v in o:
            walk(v)
walk(doc)
bad = []
total = sum(len(v) for v in exp.values())
if len(found) != total:
    bad.append(f"{len(found)} tensors in the JSON, expected {total}")
for name, t in found:
    cands = exp.get(name, [])
    ok = False
    for dtype, shape, shard, nbytes in cands:
        if t["dtype"] != dtype or list(t["shape"]) != shape:
            continue
        b = next((t[k] for k in ("nbytes", "bytes", "size") if k in t), None)
        if b is not None and b != nbytes:
            continue
        s = next((t[k] for k in ("shard", "file", "path") if k in t), None)
        if isinstance(s, str) and os.path.basename(s) != shard:
            continue
        ok = True
    if not ok:
        bad.append(f"{name}: {t} matches nothing in {cands}")
for b in bad[:8]:
    print(b)
print(f"{len(found)} tensors found")
sys.exit(1 if bad else 0)' "$T/expect" "$T/stdout" >"$T/json.out" 2>&1
	ds_st=$?
	sed 's/^/  > /' "$T/json.out"
	return $ds_st
}

for p in "$FX/base" "$FX/ft1" "$T/fx1/base" "$FX/base/model.safetensors.index.json" \
	"$T/fx1/ft1/model.safetensors"; do
	say "== inspect $p"
	run_expect 0 "" "$DS_BIN" inspect "$p"
	check "text lists every tensor with dtype, shape and shard" text_ok "$p"
	run_expect 0 "" "$DS_BIN" inspect --json "$p"
	check "--json parses and agrees with the files" json_ok "$p"
done

say "== two models at once"
run_expect 0 "" "$DS_BIN" inspect --json "$FX/base" "$FX/ft1"
check "--json of two models lists the tensors of both" \
	json_ok "$FX/base" "$FX/ft1"
run_expect 0 "" "$DS_BIN" inspect "$FX/base" "$T/fx1/ft1"
check "text of two models lists the tensors of both" \
	text_ok "$FX/base" "$T/fx1/ft1"

say "== errors"
run_expect 3 'dare-stream: error:.*nope' "$DS_BIN" inspect "$T/nope"
cp -R "$FX/base" "$T/broken"
py 'f = open(sys.argv[1], "r+b"); f.seek(8); f.write(b"]")' \
	"$T/broken/model-00002-of-00002.safetensors"
run_expect 3 'dare-stream: error:.*model-00002-of-00002' "$DS_BIN" inspect \
	"$T/broken"
run_expect 2 "" "$DS_BIN" inspect --bogus "$FX/base"

ds_finish
