# SPDX-License-Identifier: MIT
# lib.sh - helpers sourced by the CLI tests: setup, checks, fixtures, inputs
#
# Environment (set by `make check`; defaults let a test run by hand from the
# source tree): DS_BIN, DS_MKFIXTURE, DS_REF, PYTHON3, XXH128SUM.
# DS_KEEP=1 keeps the work directory for a look after a failure.

ds_top=$(cd "$(dirname "$0")/../.." && pwd)
DS_BIN=${DS_BIN:-$ds_top/dare-stream}
DS_MKFIXTURE=${DS_MKFIXTURE:-$ds_top/tests/mkfixture}
DS_REF=${DS_REF:-$ds_top/tests/ref/dsref.py}
PYTHON3=${PYTHON3:-python3}
XXH128SUM=${XXH128SUM:-xxh128sum}
LC_ALL=C
export LC_ALL
# A user's Hugging Face cache must not leak into a test.
unset HF_HUB_CACHE HF_HOME

ds_checks=0
ds_failures=0
ds_name=
T=

say() { printf '%s\n' "$*"; }
ok() { ds_checks=$((ds_checks + 1)); printf 'ok   %s\n' "$*"; }
fail() {
	ds_checks=$((ds_checks + 1))
	ds_failures=$((ds_failures + 1))
	printf 'FAIL %s\n' "$*"
}
skip_all() { printf 'SKIP %s: %s\n' "$ds_name" "$*"; exit 77; }
# Setup problems are hard errors (99), not test failures.
hard_error() { printf 'ERROR %s: %s\n' "$ds_name" "$*"; exit 99; }

# check DESC CMD...: ok when CMD succeeds.
check() {
	ds_desc=$1
	shift
	if "$@"; then ok "$ds_desc"; else fail "$ds_desc"; fi
}

# not CMD...: succeeds when CMD fails (for check).
not() { ! "$@"; }

ds_cleanup() {
	if [ -n "$T" ] && [ -d "$T" ]; then
		if [ "${DS_KEEP:-0}" = 1 ]; then
			say "kept $T"
		else
			chmod -R u+w "$T" 2>/dev/null
			rm -rf "$T"
		fi
	fi
}

# ds_setup NAME: work directory $T (removed at exit), binaries checked.
ds_setup() {
	ds_name=$1
	[ -x "$DS_BIN" ] || hard_error "DS_BIN '$DS_BIN' is not an executable"
	[ -x "$DS_MKFIXTURE" ] ||
		hard_error "DS_MKFIXTURE '$DS_MKFIXTURE' is not an executable"
	T=$(mktemp -d "${TMPDIR:-/tmp}/ds-$ds_name.XXXXXX") ||
		hard_error "mktemp failed"
	trap 'ds_cleanup' EXIT
	trap 'exit 130' INT TERM HUP
	say "# $ds_name: $DS_BIN in $T"
}

have_python() {
	[ -n "$PYTHON3" ] && [ "$PYTHON3" != : ] &&
		"$PYTHON3" -c 'import sys; sys.exit(sys.version_info < (3, 9))' \
			2>/dev/null
}

have_xxh() {
	[ -n "$XXH128SUM" ] && [ "$XXH128SUM" != : ] &&
		echo | "$XXH128SUM" >/dev/null 2>&1
}

need_python() { have_python || skip_all "python3 >= 3.9 not found"; }

# ds_finish: inputs unchanged, then the summary and the exit status.
ds_finish() {
	[ -f "$T/.inputs" ] && inputs_verify
	say "# $ds_name: $ds_checks checks, $ds_failures failed"
	[ "$ds_failures" -eq 0 ] && exit 0
	exit 1
}

# ---- running commands ------------------------------------------------------

# run CMD...: runs CMD with stdout in $T/stdout, stderr in $T/stderr, exit
# status in $ds_rc.
run() {
	say "\$ $*"
	"$@" >"$T/stdout" 2>"$T/stderr"
	ds_rc=$?
}

show_output() {
	sed -n '1,15s/^/  | /p' "$T/stdout"
	sed -n '1,15s/^/  ! /p' "$T/stderr"
}

# run_expect CODE PATTERN CMD...: CMD exits with CODE and its stderr
# matches the extended regular expression PATTERN (empty: not checked).
run_expect() {
	ds_code=$1
	ds_pat=$2
	shift 2
	run "$@"
	if [ "$ds_rc" -ne "$ds_code" ]; then
		fail "exit status $ds_rc, expected $ds_code"
		show_output
		return 1
	fi
	if [ -n "$ds_pat" ] && ! grep -Eq -- "$ds_pat" "$T/stderr"; then
		fail "exit $ds_code but stderr does not match /$ds_pat/"
		show_output
		return 1
	fi
	ok "exit $ds_code${ds_pat:+, stderr matches /$ds_pat/}"
	sed -n '1,2s/^/  ! /p' "$T/stderr"
	return 0
}

# ds_merge OUT ARGS...: a merge that must succeed.
ds_merge() {
	ds_out=$1
	shift
	run "$DS_BIN" merge -o "$ds_out" "$@"
	if [ "$ds_rc" -ne 0 ]; then
		fail "merge into $ds_out exited $ds_rc"
		show_output
		return 1
	fi
	if grep -q 'dare-stream: error' "$T/stderr"; then
		fail "merge succeeded but printed an error"
		show_output
		return 1
	fi
	ok "merge into $(basename "$ds_out")"
	return 0
}

# ---- fixtures and checks ---------------------------------------------------

# mkfix DIR OPTIONS...: a fixture set DIR/base, DIR/ft1, ...
mkfix() {
	ds_dir=$1
	shift
	"$DS_MKFIXTURE" "$@" "$ds_dir" ||
		hard_error "mkfixture $* $ds_dir failed"
}

ref() { "$PYTHON3" "$DS_REF" "$@"; }

# ref_check OUT ARGS...: dsref.py recomputes every tensor, exact bits.
ref_check() {
	ds_out=$1
	shift
	if ref check "$ds_out" "$@" >"$T/ref.out" 2>&1; then
		ok "reference: $(tail -n 1 "$T/ref.out")"
	else
		fail "reference check of $(basename "$ds_out")"
		sed -n '1,20s/^/  > /p' "$T/ref.out"
	fi
}

# ref_groups OUT SPEC ARGS...: tensors whose parameters a recipe resolves
# per tensor (gradients, filters): params.py groups OUT's tensors by the
# values SPEC (params.py's JSON) gives them, and dsref.py recomputes each
# group with ARGS, the group's values and --only its names, exact bits.
ref_groups() {
	ds_out=$1
	printf '%s\n' "$2" >"$T/params.json"
	shift 2
	ref list "$ds_out" >"$T/params.list" &&
		"$PYTHON3" "$(dirname "$DS_REF")/params.py" "$T/params.list" \
			"$T/params.json" >"$T/params.groups" ||
		{ fail "params.py for $(basename "$ds_out")"; return 1; }
	ds_bad=0 ds_groups=0
	while IFS="$(printf '\t')" read -r ds_args ds_names; do
		ds_only=
		for ds_nm in $ds_names; do ds_only="$ds_only --only $ds_nm"; done
		ds_groups=$((ds_groups + 1))
		# shellcheck disable=SC2086 # the arguments are words
		ref check "$ds_out" "$@" $ds_args $ds_only >"$T/ref.out" 2>&1 || {
			ds_bad=$((ds_bad + 1))
			say "  > group $ds_args"
			sed -n '1,5s/^/  > /p' "$T/ref.out"
		}
	done <"$T/params.groups"
	check "reference: $(basename "$ds_out"), every tensor at its own parameters ($ds_groups groups)" \
		test "$ds_bad" -eq 0 -a "$ds_groups" -gt 0
}

# ref_validate DIR: format rules, index, CHECKSUMS.xxh128 coverage.
ref_validate() {
	if ref validate "$1" >"$T/ref.out" 2>&1; then
		ok "validate: $(tail -n 1 "$T/ref.out")"
	else
		fail "validate $(basename "$1")"
		sed -n '1,20s/^/  > /p' "$T/ref.out"
	fi
}

# xxh_check DIR: xxh128sum -c accepts CHECKSUMS.xxh128 inside DIR.
xxh_check() {
	if ! have_xxh; then
		say "skip xxh128sum -c (no xxh128sum)"
		return 0
	fi
	if (cd "$1" && "$XXH128SUM" -c --quiet CHECKSUMS.xxh128) \
		>"$T/xxh.out" 2>&1; then
		ok "xxh128sum -c CHECKSUMS.xxh128 in $(basename "$1")"
	else
		fail "xxh128sum -c in $(basename "$1")"
		sed -n '1,10s/^/  > /p' "$T/xxh.out"
	fi
}

# tensor_sum PATH NAME: sha256 of one tensor's bytes (dtype and shape too).
tensor_sum() {
	ref list "$1" | awk -F '\t' -v n="$2" '$1 == n { print $2, $3, $6 }'
}

# no_output OUT: nothing that looks finished; a fresh OUT is absent or
# empty.  no_output OUT keep: OUT held files before; only look for results.
no_output() {
	if [ ! -e "$1" ]; then
		ok "no output directory"
		return 0
	fi
	ds_found=$(find "$1" -name 'CHECKSUMS.xxh128' -o -name '*.safetensors' \
		-o -name 'model.safetensors.index.json' -o -name 'dare-stream.yml')
	if [ -n "$ds_found" ]; then
		fail "finished-looking output left: $ds_found"
		return 1
	fi
	if [ "${2:-}" != keep ] && [ -n "$(ls -A "$1")" ]; then
		fail "output directory not empty: $(ls -A "$1" | tr '\n' ' ')"
		return 1
	fi
	ok "no finished-looking output in $(basename "$1")"
	return 0
}

# ---- inputs never change ---------------------------------------------------

ds_hash() {
	if have_xxh; then
		"$XXH128SUM" "$1" 2>/dev/null
	else
		cksum "$1"
	fi
}

inputs_snapshot() {
	while IFS= read -r ds_in; do
		find "$ds_in" -print | sort
		find -L "$ds_in" -type f -print | sort | while IFS= read -r ds_f; do
			ds_hash "$ds_f"
		done
	done <"$T/.inputs"
}

# inputs_record DIR...: remember every file (and its checksum) under DIR;
# ds_finish (or inputs_verify) checks nothing was changed or added.
inputs_record() {
	for ds_in; do
		printf '%s\n' "$ds_in" >>"$T/.inputs"
	done
	inputs_snapshot >"$T/.inputs.sum"
}

inputs_verify() {
	inputs_snapshot >"$T/.inputs.now"
	if cmp -s "$T/.inputs.sum" "$T/.inputs.now"; then
		ok "inputs unchanged (files and checksums)"
	else
		fail "inputs changed"
		diff "$T/.inputs.sum" "$T/.inputs.now" | sed -n '1,10s/^/  /p'
	fi
}

# stderr_has DESC PATTERN: the last command's stderr matches PATTERN (ERE).
stderr_has() {
	if grep -Eq -- "$2" "$T/stderr"; then
		ok "$1"
	else
		fail "$1: stderr does not match /$2/"
		sed -n '1,5s/^/  ! /p' "$T/stderr"
	fi
}

# st_edit FILE CODE: run the Python CODE on h, FILE's safetensors header
# (a dict in file order), and rewrite FILE with the new header (padded to
# 8 bytes) and the same data bytes.  For building broken inputs.
st_edit() {
	"$PYTHON3" - "$1" "$2" <<'PYEOF'
import json, struct, sys
path, code = sys.argv[1], sys.argv[2]
with open(path, "rb") as f:
    n = struct.unpack("<Q", f.read(8))[0]
    h = json.loads(f.read(n))
    data = f.read()
exec(code)
t = json.dumps(h, separators=(",", ":")).encode()
t += b" " * (-(8 + len(t)) % 8)
with open(path, "wb") as f:
    f.write(struct.pack("<Q", len(t)) + t + data)
PYEOF
}

# hf_cache_add HUB ID SRC [REV]: snapshot REV (default: one made from ID)
# of model ID (org/name) in a Hugging Face cache laid out as
# huggingface_hub lays it out, holding the files of SRC as symlinks into
# blobs/; refs/main points at REV.
hf_cache_add() {
	ds_repo=$1/models--$(printf '%s' "$2" | sed 's|/|--|')
	ds_rev=${4:-$(printf '%040d' "$(printf '%s' "$2" | cksum | cut -d ' ' -f 1)")}
	mkdir -p "$ds_repo/blobs" "$ds_repo/refs" "$ds_repo/snapshots/$ds_rev"
	for ds_f in "$3"/*; do
		if command -v sha256sum >/dev/null 2>&1; then
			ds_b=$(sha256sum "$ds_f" | cut -c 1-64)
		else
			ds_b=$(printf '%064d' "$(cksum <"$ds_f" | tr ' ' 0)")
		fi
		cp "$ds_f" "$ds_repo/blobs/$ds_b"
		ln -s "../../blobs/$ds_b" \
			"$ds_repo/snapshots/$ds_rev/$(basename "$ds_f")"
	done
	printf '%s' "$ds_rev" >"$ds_repo/refs/main"
}

# evict FILE...: drop the files' clean pages from the page cache (needs
# Python; sync first for pages just written)
evict() {
	py '
for f in sys.argv[1:]:
    fd = os.open(f, os.O_RDONLY)
    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    os.close(fd)
' "$@"
}

# py CODE ARGS...: a line of Python (sys.argv[1:] = ARGS) for small edits.
py() {
	ds_code=$1
	shift
	"$PYTHON3" -c "import sys, os, json
$ds_code" "$@"
}
