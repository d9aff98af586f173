#!/bin/sh
# SPDX-License-Identifier: MIT
# pagecache.sh - a merge leaves the page cache as it found its inputs
#
# Inputs that were not in the page cache leave it as they are consumed:
# after a merge from evicted inputs, at most a tenth of their bytes are
# cached (the headers and the partial pages at window edges stay).
# Inputs that were cached stay cached (that needs cachestat(2), Linux 6.5;
# on older kernels the merge drops them too and that case is skipped).
# The bytes do not depend on it.  Exit 77 where pages cannot be evicted
# here (tmpfs) or fincore(1) is missing.
# shellcheck source=lib.sh
. "${DS_TESTLIB:-$(dirname "$0")/lib.sh}"
ds_setup pagecache
need_python
command -v fincore >/dev/null 2>&1 || skip_all "fincore not found"
mkfix "$T/fx" --models 2 --size 24000000 --seed 71
set -- "$T"/fx/base/*.safetensors "$T"/fx/ft1/*.safetensors \
	"$T"/fx/ft2/*.safetensors

# evict FILE...: drop the files' clean pages from the cache
evict() {
	py '
for f in sys.argv[1:]:
    fd = os.open(f, os.O_RDONLY)
    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    os.close(fd)
' "$@"
}

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
check "the same bytes as ties with --io pread" sh -c '
	"$1" merge -q --io pread --method ties -p 0.5 --base "$2/base" \
		--model "$2/ft1" --model "$2/ft2" -o "$3" &&
	cmp "$3/CHECKSUMS.xxh128" "$4/CHECKSUMS.xxh128"' sh "$DS_BIN" "$T/fx" \
	"$T/pread" "$T/cold-ties"

say "== inputs cached before the merge stay cached"
if py 'r = os.uname().release.split("-")[0].split(".")
sys.exit(0 if (int(r[0]), int(r[1])) >= (6, 5) else 1)'; then
	cat "$@" >/dev/null
	check "the inputs are cached before the merge" above 95 "$@"
	ds_merge "$T/warm" --method ties -p 0.5 --base "$T/fx/base" \
		--model "$T/fx/ft1" --model "$T/fx/ft2"
	check "ties, from cached inputs: more than 95% still cached after" \
		above 95 "$@"
	check "the same bytes as from evicted inputs" \
		cmp "$T/warm/CHECKSUMS.xxh128" "$T/cold-ties/CHECKSUMS.xxh128"
else
	say "(kernel $(uname -r) has no cachestat(2): skipped)"
fi
ds_finish
