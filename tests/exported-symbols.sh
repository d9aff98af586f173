#!/bin/sh
# SPDX-License-Identifier: MIT
# exported-symbols.sh - the shared library exports the public API, all of it
# and nothing else, and each function of the API is documented (a comment
# in the header, a section 3 page)
#
# The functions declared in include/dare-stream.h are read with the
# compiler (gcc -aux-info lists every prototype of a translation unit) when
# it can, else with a parser of the header's text of its own, independent
# of the sed script that makes the link-time list; the dynamic symbol table
# of the built libdare-stream.so must hold each of them as a defined
# function, and no other defined symbol.  A build without a shared library
# skips (77).
#
# Environment (set by make check): srcdir, DS_CC, DS_NM; run from the build
# directory.
set -u
LC_ALL=C
export LC_ALL
name=exported-symbols
srcdir=${srcdir:-.}
hdr=$srcdir/include/dare-stream.h
lib=.libs/libdare-stream.so
NM=${DS_NM:-nm}
CC=${DS_CC:-cc}
checks=0
failures=0
ok() { checks=$((checks + 1)); printf 'ok   %s\n' "$*"; }
fail() {
	checks=$((checks + 1))
	failures=$((failures + 1))
	printf 'FAIL %s\n' "$*"
}

[ -f "$hdr" ] || { echo "ERROR $name: no $hdr"; exit 99; }
if [ ! -f "$lib" ]; then
	echo "SKIP $name: no $lib (built without --enable-shared?)"
	exit 77
fi
T=$(mktemp -d "${TMPDIR:-/tmp}/ds-$name.XXXXXX") || exit 99
trap 'rm -rf "$T"' EXIT

# The header's functions.  gcc -aux-info writes lines like
#   /* include/dare-stream.h:72:NC */ extern ds_ctx *ds_ctx_create (void);
# The fallback joins the header into one line per declaration (between
# semicolons, comments and preprocessor lines removed) and takes the name
# before the first parenthesis of each declaration that is not a typedef.
how="gcc -aux-info"
# shellcheck disable=SC2086 # DS_CC may carry options
if $CC -aux-info "$T/aux" -fsyntax-only -x c "$hdr" 2>/dev/null &&
	[ -s "$T/aux" ]; then
	sed -n 's|^/\* [^ ]*dare-stream\.h:[0-9]*:[A-Z]* \*/ extern \([^(]*\) (.*|\1|p' \
		"$T/aux" | awk '{ n = $NF; sub(/^\*+/, "", n); print n }' |
		sort -u >"$T/header"
else
	how="header text"
	sed -e 's|/\*.*\*/||g' -e '/\/\*/,/\*\//d' -e '/^#/d' "$hdr" |
		tr '\n' ' ' | tr ';{}' '\n\n\n' |
		sed -n -e '/^ *typedef /d' -e '/^ *\(struct\|enum\) [a-z_]* *$/d' \
			-e 's/^[^(]*[ *]\(ds_[a-z0-9_]*\) *(.*/\1/p' |
		sort -u >"$T/header"
fi
n=$(wc -l <"$T/header")
if [ "$n" -ge 30 ]; then
	ok "$n functions declared in dare-stream.h ($how)"
else
	fail "only $n functions found in $hdr ($how)"
fi

# Defined dynamic symbols: "ADDRESS TYPE NAME" (BSD format, nm -B).
$NM -B -D --defined-only "$lib" >"$T/nm" ||
	{ echo "ERROR $name: $NM -D $lib failed"; exit 99; }
awk 'NF == 3 { print $3 }' "$T/nm" | sed 's/@.*//' | sort -u >"$T/exported"
awk 'NF == 3 && ($2 == "T" || $2 == "i") { print $3 }' "$T/nm" |
	sed 's/@.*//' | sort -u >"$T/functions"

missing=$(comm -23 "$T/header" "$T/functions")
if [ -z "$missing" ]; then
	ok "every declared function is a function exported by $lib"
else
	fail "declared in dare-stream.h, not exported as a function:" $missing
fi
extra=$(comm -13 "$T/header" "$T/exported")
if [ -z "$extra" ]; then
	ok "$lib exports nothing else ($(wc -l <"$T/exported") symbols)"
else
	fail "exported by $lib, not declared in dare-stream.h:" $extra
fi

# Each function has a doc comment: the line above its prototype ends one.
undoc=$(awk '/^[A-Za-z][^(]*[ *]ds_[a-z0-9_]*\(/ && !/^typedef/ &&
	prev !~ /\*\/[ \t]*$/ { print FNR ": " $0 } { prev = $0 }' "$hdr")
if [ -z "$undoc" ]; then
	ok "every prototype in dare-stream.h follows a doc comment"
else
	fail "prototypes without a doc comment above them:"
	printf '  %s\n' "$undoc"
fi

# Each function has a section 3 page, man/NAME.3, that names it in its NAME
# section: itself, or the page its ".so" line points to.
nomanual=
while read -r f; do
	page=$srcdir/man/$f.3
	if [ -f "$page" ]; then
		so=$(sed -n 's|^\.so man3/\(.*\)$|\1|p' "$page")
		[ -n "$so" ] && page=$srcdir/man/$so
	fi
	[ -f "$page" ] && sed -n '/^\.SH NAME/,/^\.SH/p' "$page" |
		grep -qE "(^|[ ,])$f(,|[ ]|$)" || nomanual="$nomanual $f"
done <"$T/header"
if [ -z "$nomanual" ]; then
	ok "every function has a man page naming it (man/NAME.3)"
else
	fail "no section 3 page naming:$nomanual"
fi

# The shared library's SONAME carries the interface version.
soname=$(objdump -p "$lib" 2>/dev/null | awk '$1 == "SONAME" { print $2 }')
case $soname in
libdare-stream.so.[0-9]*) ok "SONAME $soname" ;;
*) fail "SONAME is '$soname', expected libdare-stream.so.N" ;;
esac

echo "# $name: $checks checks, $failures failed"
[ "$failures" = 0 ]
