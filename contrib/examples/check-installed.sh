#!/bin/sh
# SPDX-License-Identifier: MIT
# check-installed.sh - what "make install" or the packages put in place works
#
# Usage: check-installed.sh ROOT PREFIX
#   ROOT    where the files were installed: a DESTDIR, or / for packages
#   PREFIX  the configured prefix (/usr/local, /usr)
# Environment: DS_MKFIXTURE (tests/mkfixture of a build), CC (cc).
#
# Checks that the binary, the shared and static library, the header, the
# pkg-config file, every man page of the source tree and both completions
# are installed; that the man pages render; that merge-example.c builds
# against the installed library with "pkg-config --cflags --libs
# dare-stream" (and statically with --static) and links the installed
# library; that it merges generated models into a directory that the
# installed "dare-stream verify" accepts, byte-identical to the installed
# CLI's merge of the same recipe; that its errors carry the library's
# message.  Ends with "# check-installed: N checks, F failed".
# shellcheck disable=SC2317 # functions run through check
set -u
srcdir=$(cd "$(dirname "$0")/../.." && pwd)
[ $# = 2 ] || { echo "usage: $0 ROOT PREFIX" >&2; exit 2; }
ROOT=${1%/}
PREFIX=$2
P=$ROOT$PREFIX
CC=${CC:-cc}
DS_BIN=$P/bin/dare-stream
export DS_BIN
# shellcheck source=../../tests/cli/lib.sh
. "$srcdir/tests/cli/lib.sh"
ds_setup check-installed

# ---- files ------------------------------------------------------------------
# first PATTERN...: the first existing path of the patterns (globs), or "".
first() {
	for ds_g; do
		for ds_f in $ds_g; do
			[ -e "$ds_f" ] && { printf '%s\n' "$ds_f"; return 0; }
		done
	done
	return 1
}
installed() {
	if [ -n "$2" ] && [ -e "$2" ]; then
		ok "$1: ${2#"$ROOT"}"
	else
		fail "$1 not installed"
	fi
}
so=$(first "$P/lib/libdare-stream.so.0" "$P/lib/*/libdare-stream.so.0" \
	"$P/lib64/libdare-stream.so.0")
libdir=$(dirname "${so:-$P/lib/x}")
installed "the command" "$(first "$DS_BIN")"
installed "the shared library" "$so"
installed "its development link" "$(first "$libdir/libdare-stream.so")"
installed "the static library" "$(first "$libdir/libdare-stream.a")"
installed "the header" "$(first "$P/include/dare-stream.h")"
installed "the pkg-config file" "$(first "$libdir/pkgconfig/dare-stream.pc")"
bashc=$(first "$P/share/bash-completion/completions/dare-stream")
zshc=$(first "$P/share/zsh/site-functions/_dare-stream" \
	"$P/share/zsh/vendor-completions/_dare-stream")
installed "the bash completion" "$bashc"
installed "the zsh completion" "$zshc"
example=$(first "$P/share/doc/*/examples/merge-example.c" \
	"$P/share/doc/*/merge-example.c" \
	"$P/share/doc/*/examples/merge-example.c.gz")
installed "the example" "$example"
mandir=$P/share/man
missing=
for page in "$srcdir"/man/*.[0-9]; do
	name=$(basename "$page")
	sec=${name##*.}
	first "$mandir/man$sec/$name" "$mandir/man$sec/$name.gz" >/dev/null ||
		missing="$missing $name"
done
if [ -z "$missing" ]; then
	ok "every page of man/ is installed in ${mandir#"$ROOT"}"
else
	fail "man pages not installed:$missing"
fi

# ---- what the files do ------------------------------------------------------
if [ "$ROOT" != "" ]; then
	LD_LIBRARY_PATH=$libdir${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
	PKG_CONFIG_SYSROOT_DIR=$ROOT
	export LD_LIBRARY_PATH PKG_CONFIG_SYSROOT_DIR
fi
PKG_CONFIG_PATH=$libdir/pkgconfig
export PKG_CONFIG_PATH

# links_installed BIN: BIN loads the installed libdare-stream.so.0 (paths
# compared resolved: /lib is /usr/lib on a merged-/usr system).
links_installed() {
	ds_l=$(ldd "$1" | awk '$1 == "libdare-stream.so.0" { print $3 }')
	[ -n "$ds_l" ] && [ "$(readlink -f "$ds_l")" = "$(readlink -f "$so")" ] ||
		{ say "  $1 loads '$ds_l'"; return 1; }
}

version=$(sed -n 's/^#define DS_VERSION_STRING "\(.*\)"$/\1/p' \
	"$P/include/dare-stream.h" 2>/dev/null)
run "$DS_BIN" --version
check "dare-stream --version: exit 0, prints $version" \
	eval '[ "$ds_rc" = 0 ] && [ -n "$version" ] && grep -qF "$version" "$T/stdout"'
check "the binary uses the installed library" links_installed "$DS_BIN"

# man: the page of the command, and each function's page (through .so
# links) found by name and rendered without a warning.
# Installed in the system (ROOT /), the man pages are found without -M.
manpath=
[ "$ROOT" = "" ] || manpath="-M $mandir"
# shellcheck disable=SC2086 # manpath is words
run man $manpath -w dare-stream
check "man -w dare-stream: ${mandir#"$ROOT"}/man1/dare-stream.1*" \
	grep -q "^$mandir/man1/dare-stream\.1" "$T/stdout"
man_renders() {
	sed -n -e '/^typedef/d' -e 's/^[A-Za-z][^(]*[ *]\(ds_[a-z0-9_]*\)(.*/\1/p' \
		"$P/include/dare-stream.h" >"$T/functions"
	echo libdare-stream >>"$T/functions"
	ds_bad=0
	while read -r f; do
		# shellcheck disable=SC2086
		MANWIDTH=80 man $manpath --warnings -E UTF-8 3 "$f" \
			>"$T/page" 2>"$T/warn" </dev/null
		if [ -s "$T/warn" ] || ! grep -q "$f" "$T/page" ||
			! grep -q '^RETURN VALUE' "$T/page"; then
			say "  man 3 $f: $(head -c 300 "$T/warn")"
			ds_bad=1
		fi
	done <"$T/functions"
	return $ds_bad
}
check "man 3 FUNCTION renders, with RETURN VALUE, for every function" \
	man_renders
# The command's page and the formats' pages, without a warning either.
for pg in 1:dare-stream 5:dare-stream-pack 5:dare-stream-recipe; do
	# shellcheck disable=SC2086
	MANWIDTH=80 man $manpath --warnings -E UTF-8 "${pg%%:*}" "${pg#*:}" \
		>"$T/page" 2>"$T/warn" </dev/null
	sed -n '1,3s/^/  ! /p' "$T/warn"
	check "man ${pg%%:*} ${pg#*:} renders without a warning" \
		eval '[ ! -s "$T/warn" ] && grep -q "^NAME" "$T/page"'
done

check "bash completion binds _dare_stream" eval \
	'[ "$(bash -c ". \"$bashc\"; complete -p dare-stream")" = "complete -F _dare_stream dare-stream" ]'
if command -v zsh >/dev/null 2>&1; then
	check "zsh completion parses" zsh -n "$zshc"
fi

# ---- the example, against the installed library -----------------------------
case $example in
*.gz) gzip -dc "$example" >"$T/merge-example.c" ;;
*) cp "$example" "$T/merge-example.c" ;;
esac
flags=$(pkg-config --cflags --libs dare-stream)
check "pkg-config --cflags --libs dare-stream: $flags" \
	eval 'case " $flags " in *" -ldare-stream "*) true ;; *) false ;; esac'
# shellcheck disable=SC2086 # flags are words
check "merge-example.c builds with them (-Wall -Wextra -Werror)" \
	$CC -Wall -Wextra -Werror -o "$T/ex" "$T/merge-example.c" $flags
check "merge-example links the installed libdare-stream.so.0" \
	links_installed "$T/ex"
static=$(pkg-config --static --libs dare-stream | sed 's/ -ldare-stream / /')
# shellcheck disable=SC2086
check "and statically with libdare-stream.a and pkg-config --static" \
	$CC -o "$T/ex-static" "$T/merge-example.c" \
	$(pkg-config --cflags dare-stream) "$libdir/libdare-stream.a" $static
check "the static one needs no libdare-stream.so" \
	eval '[ -x "$T/ex-static" ] && ! ldd "$T/ex-static" | grep -q libdare-stream'

mkfix "$T/fx" --models 2 --seed 7
inputs_record "$T/fx"
FX="$T/fx/base $T/fx/ft1 $T/fx/ft2"
# shellcheck disable=SC2086
run "$T/ex" "$T/out" $FX 0.5
check "merge-example exits 0" eval '[ "$ds_rc" = 0 ] || { show_output; false; }'
check "it prints the plan" grep -qE '^plan: [1-9][0-9]* tensors \([0-9]+ merged\), [1-9][0-9]* shards$' "$T/stdout"
check "it prints progress to 100%" grep -q '^progress: 100% ' "$T/stdout"
check "it prints 'merged into OUT'" grep -qxF "merged into $T/out" "$T/stdout"
run "$DS_BIN" verify "$T/out"
check "the installed dare-stream verify accepts the output" \
	eval '[ "$ds_rc" = 0 ] && grep -q ": ok (" "$T/stdout"'
run "$DS_BIN" merge -q --method dare_ties -p 0.5 --seed 42 -o "$T/cli" \
	--base "$T/fx/base" --model "$T/fx/ft1" --model "$T/fx/ft2"
check "the installed CLI merges the same recipe" eval '[ "$ds_rc" = 0 ]'
check "byte-identical to the example's merge (CHECKSUMS.xxh128)" \
	cmp "$T/out/CHECKSUMS.xxh128" "$T/cli/CHECKSUMS.xxh128"
# shellcheck disable=SC2086
run "$T/ex-static" "$T/out-static" $FX 0.5
check "the static example gives the same bytes" eval \
	'[ "$ds_rc" = 0 ] && cmp "$T/out/CHECKSUMS.xxh128" "$T/out-static/CHECKSUMS.xxh128"'
run "$T/ex" "$T/out2" "$T/fx/base" "$T/fx/ft1" "$T/fx/missing"
check "a missing model: exit 1, the library's message names it" eval \
	'[ "$ds_rc" = 1 ] && grep -q "ds_merge_create failed (-4101): $T/fx/missing: no such file" "$T/stderr"'
check "and nothing is written" eval '[ ! -e "$T/out2" ]'

ds_finish
