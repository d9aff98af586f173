#!/bin/sh
# SPDX-License-Identifier: MIT
# pagecache.sh - a merge leaves the page cache as it found its inputs
#
# Inputs that were not in the page cache leave it as they are consumed:
# after a merge or an extract from evicted inputs, at most a tenth of
# their bytes are cached (the headers and the partial pages at window edges
# stay).
# Inputs that were cached stay cached (that needs cachestat(2), Linux 6.5,
# to see the files' pages; where it does not, the merge drops them too and
# that case is skipped).
# The bytes do not depend on it.  Exit 77 where pages cannot be evicted
# here (tmpfs) or fincore(1) is missing.
# Functions run through check look unreachable to shellcheck.
# shellcheck disable=SC2317
# shellcheck source=lib.sh
. "${DS_TESTLIB:-$(dirname "$0")/lib.sh}"
ds_setup pagecache
need_python
command -v fincore >/dev/null 2>&1 || skip_all "fincore not found"
mkfix "$T/fx" --models 2 --size 24000000 --seed 71
set -- "$T"/fx/base/*.safetensors "$T"/fx/ft1/*.safetensors \
	"$T"/fx/ft2/*.safetensors

# cached FILE...: percent of the files' bytes in the page cache
cached() {
	total=$(stat -c %s "$@" | awk '{ s += $1 } END { print s }')
	fincore --bytes --noheadings --output RES "$@" |
		awk -v t="$total" '{ r += $1 } END { printf "%.0f\n", 100 * r / t }'
}

# below N FILE...: fewer than N percent of the files' bytes are cached
below() {
	n=$1
	shift
	c=$(cached "$@")
	[ "$c" -lt "$n" ] || { echo "$c% cached, expected below $n%"; return 1; }
}

# above N FILE...: more than N percent are cached
above() {
	n=$1
	shift
	c=$(cached "$@")
	[ "$c" -gt "$n" ] || { echo "$c% cached, expected above $n%"; return 1; }
}

sync
evict "$@"
below 5 "$@" >/dev/null || skip_all "pages cannot be evicted here ($(cached "$@")% stay)"

say "== inputs not cached before the merge are not cached after it"
for m in dare_ties ties; do
	evict "$@"
	ds_merge "$T/cold-$m" --method "$m" -p 0.5 --base "$T/fx/base" \
		--model "$T/fx/ft1" --model "$T/fx/ft2"
	check "$m, from evicted inputs: at most 10% of them cached after" \
		below 11 "$@"
done
evict "$@"
run "$DS_BIN" extract -q --base "$T/fx/base" --model "$T/fx/ft1" -p 0.9 \
	-o "$T/fx/ft1.dsd"
check "extract from evicted inputs: exit 0 (got $ds_rc)" [ "$ds_rc" -eq 0 ]
check "extract, from evicted inputs: at most 10% of them cached after" \
	below 11 "$T"/fx/base/*.safetensors "$T"/fx/ft1/*.safetensors
run "$DS_BIN" extract -q --base "$T/fx/base" --model "$T/fx/ft2" -p 0.9 \
	--stream 1 -o "$T/fx/ft2.dsd"
evict "$@" "$T/fx/ft1.dsd" "$T/fx/ft2.dsd"
ds_merge "$T/cold-packs" --method dare_ties -p 0.9 --base "$T/fx/base" \
	--model "$T/fx/ft1.dsd" --model "$T/fx/ft2.dsd"
check "dare_ties of evicted packs: at most 10% of the packs cached after" \
	below 11 "$T/fx/ft1.dsd" "$T/fx/ft2.dsd"
# shellcheck disable=SC2016 # expanded by the inner shell
check "the same bytes as ties with --io pread" sh -c '
	"$1" merge -q --io pread --method ties -p 0.5 --base "$2/base" \
		--model "$2/ft1" --model "$2/ft2" -o "$3" &&
	cmp "$3/CHECKSUMS.xxh128" "$4/CHECKSUMS.xxh128"' sh "$DS_BIN" "$T/fx" \
	"$T/pread" "$T/cold-ties"

say "== inputs cached before the merge stay cached"
cat "$@" >/dev/null
check "the inputs are cached before the merge" above 95 "$@"
# sees_cache FILE: cachestat(2) runs here and sees FILE's pages (a kernel
# before 6.5 has no such call; an overlay file's pages are another file's)
sees_cache() {
	py '
import ctypes
libc = ctypes.CDLL(None, use_errno=True)
fd = os.open(sys.argv[1], os.O_RDONLY)
rng = (ctypes.c_uint64 * 2)(0, 0)
cs = (ctypes.c_uint64 * 5)()
r = libc.syscall(ctypes.c_long(451), ctypes.c_long(fd), rng, cs,
                 ctypes.c_long(0))
page = os.sysconf("SC_PAGE_SIZE")
sys.exit(0 if r == 0 and cs[0] * page > os.fstat(fd).st_size // 2 else 1)
' "$1"
}
if sees_cache "$1"; then
	ds_merge "$T/warm" --method ties -p 0.5 --base "$T/fx/base" \
		--model "$T/fx/ft1" --model "$T/fx/ft2"
	check "ties, from cached inputs: more than 95% still cached after" \
		above 95 "$@"
	check "the same bytes as from evicted inputs" \
		cmp "$T/warm/CHECKSUMS.xxh128" "$T/cold-ties/CHECKSUMS.xxh128"
	run "$DS_BIN" extract -q --base "$T/fx/base" --model "$T/fx/ft1" \
		-p 0.9 -o "$T/fx/warm.dsd"
	check "extract, from cached inputs: more than 95% still cached after" \
		above 95 "$@"
	check "the same pack as from evicted inputs" \
		cmp "$T/fx/warm.dsd" "$T/fx/ft1.dsd"
else
	say "(cachestat(2) does not see the cache here, kernel $(uname -r):" \
		"the merge drops these inputs too; skipped)"
fi
ds_finish
