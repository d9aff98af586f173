#!/bin/sh
# SPDX-License-Identifier: MIT
# man-examples.sh - every example of dare-stream(1) runs as written
#
# The examples are the .EX ... .EE blocks of the EXAMPLES section of
# man/dare-stream.1 (from ".SH EXAMPLES" to the next ".SH"); each block is
# one shell script.  Its text is taken as it is, with only the roff escapes
# a command needs turned back into characters: \- (-), \e (\), \& (nothing),
# \(aq ('), \(dq ("), \(ti (~), \(ha (^), \(rs (\).  Any other escape, or a
# request line inside a block, is an error: the test would not know what
# the reader sees.  Nothing of the commands is rewritten.
#
# As the page says, the examples run in order, in one directory that holds
# a base model in base and fine-tunes in ft1 and ft2 (tests/mkfixture, 2
# shards each); the Hugging Face ids meta-llama/Llama-2-7b-hf, org/math and
# org/chat are those three models in a cache laid out like huggingface_hub's
# ($HF_HUB_CACHE); "dare-stream" on PATH is the build's.  Each block must
# exit 0, and each -o OUT it names must exist afterwards (must not, with
# --dry-run).  A block that calls jq, xxh128sum or GNU parallel is reported
# as not run when that tool is missing (contrib/check.sh installs them).
# The examples must also cover the commands: merge (--config too), inspect,
# verify, extract, apply, delta-stats, --partition and finalize.
# Functions run through check look unreachable to shellcheck.
# shellcheck disable=SC2317
# shellcheck source=cli/lib.sh
. "${DS_TESTLIB:-$(dirname "$0")/cli/lib.sh}"
page=$(cd "$(dirname "$0")/.." && pwd)/man/dare-stream.1
ds_setup man-examples
[ -r "$page" ] || hard_error "cannot read $page"

# ---- the examples ----------------------------------------------------------

mkdir "$T/ex" || hard_error "mkdir $T/ex"
if ! awk -v dir="$T/ex" '
function unescape(s,    out, c, n) {
	out = ""
	while ((n = index(s, "\\")) > 0) {
		out = out substr(s, 1, n - 1)
		c = substr(s, n + 1, 1)
		if (c == "-") { out = out "-"; s = substr(s, n + 2) }
		else if (c == "e") { out = out "\\"; s = substr(s, n + 2) }
		else if (c == "&") { s = substr(s, n + 2) }
		else if (c == "(") {
			c = substr(s, n + 2, 2)
			if (c == "aq") out = out "\047"
			else if (c == "dq") out = out "\""
			else if (c == "ti") out = out "~"
			else if (c == "ha") out = out "^"
			else if (c == "rs") out = out "\\"
			else bad("escape \\(" c)
			s = substr(s, n + 4)
		} else
			bad("escape \\" c)
	}
	return out s
}
function bad(what) {
	printf "line %d: %s in an example\n", NR, what
	err = 1
	exit 1
}
/^\.SH / { insec = ($0 == ".SH EXAMPLES"); next }
!insec { next }
/^\.EX$/ { if (inex) bad(".EX inside .EX"); inex = 1; n++
	f = sprintf("%s/%02d.sh", dir, n); next }
/^\.EE$/ { if (!inex) bad(".EE without .EX"); inex = 0; close(f); next }
inex && /^[.\047]/ { bad("request " $0) }
inex { print unescape($0) >f }
END {
	if (err) exit 1
	if (inex) { print "an .EX block without .EE"; exit 1 }
	if (n == 0) { print "no .EX block in EXAMPLES"; exit 1 }
}' "$page" >"$T/awk.out" 2>&1; then
	cat "$T/awk.out"
	hard_error "cannot read the examples of $page"
fi
nex=$(find "$T/ex" -name '*.sh' | wc -l)
ok "$nex examples in the EXAMPLES section of dare-stream.1"

cat "$T"/ex/*.sh >"$T/all.sh"
for w in 'dare-stream merge' '--config' 'dare-stream inspect' \
	'dare-stream verify' 'dare-stream extract' 'dare-stream apply' \
	'dare-stream delta-stats' '--partition' 'dare-stream finalize'; do
	check "the examples show $w" grep -q -e "$w" "$T/all.sh"
done

# ---- where they run --------------------------------------------------------

W=$T/work
say "== fixtures: base, ft1, ft2 in $W; the ids in a Hugging Face cache"
mkfix "$W" --models 2 --seed 23
inputs_record "$W/base" "$W/ft1" "$W/ft2"

# hf_add ID SRC: snapshot of model ID with SRC's files as symlinks into
# blobs/, refs/main naming it, as huggingface_hub lays them out.
hf_add() {
	repo=$T/hub/models--$(printf '%s' "$1" | sed 's|/|--|g')
	rev=0123456789abcdef0123456789abcdef01234567
	mkdir -p "$repo/blobs" "$repo/refs" "$repo/snapshots/$rev" ||
		hard_error "mkdir $repo"
	i=0
	for f in "$2"/*; do
		i=$((i + 1))
		if ! cp "$f" "$repo/blobs/blob$i" ||
			! ln -s "../../blobs/blob$i" \
				"$repo/snapshots/$rev/$(basename "$f")"; then
			hard_error "cannot copy $f into $repo"
		fi
	done
	printf '%s' "$rev" >"$repo/refs/main"
}
hf_add meta-llama/Llama-2-7b-hf "$W/base"
hf_add org/math "$W/ft1"
hf_add org/chat "$W/ft2"
HF_HUB_CACHE=$T/hub
export HF_HUB_CACHE

mkdir "$T/bin" || hard_error "mkdir $T/bin"
printf '#!/bin/sh\nexec %s "$@"\n' "'$DS_BIN'" >"$T/bin/dare-stream"
chmod +x "$T/bin/dare-stream"
PATH=$T/bin:$PATH
export PATH

# outputs FILE: the word after each -o of the script FILE.
outputs() {
	sed 's/\\$//' "$1" | tr -s ' \t' '\n' |
		awk 'o { print; o = 0 } $0 == "-o" { o = 1 }'
}

# ---- run them ---------------------------------------------------------------

for f in "$T"/ex/*.sh; do
	name="example $(basename "$f" .sh): $(head -n 1 "$f" |
		sed 's/ *\\$//' | cut -c 1-50)"
	say "== $name"
	sed 's/^/  $ /' "$f"
	missing=
	for tool in jq xxh128sum parallel; do
		if grep -Eq "(^|[ (|;])$tool( |$)" "$f" &&
			! command -v "$tool" >/dev/null; then
			missing="$missing $tool"
		fi
	done
	if [ -n "$missing" ]; then
		say "not run: needs$missing"
		continue
	fi
	(cd "$W" && sh -e "$f") >"$T/stdout" 2>"$T/stderr"
	rc=$?
	if [ "$rc" = 0 ]; then
		ok "$name: exit 0"
	else
		fail "$name: exit $rc"
		tail -n 10 "$T/stdout" | sed 's/^/  | /'
		tail -n 10 "$T/stderr" | sed 's/^/  ! /'
		continue
	fi
	for o in $(outputs "$f"); do
		if grep -q -e '--dry-run' "$f"; then
			check "$name: --dry-run wrote no $o" test ! -e "$W/$o"
		elif [ -d "$W/$o" ]; then
			check "$name: $o holds CHECKSUMS.xxh128" \
				test -s "$W/$o/CHECKSUMS.xxh128"
		else
			check "$name: $o written" test -s "$W/$o"
		fi
	done
done

ds_finish
