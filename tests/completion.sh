#!/bin/sh
# SPDX-License-Identifier: MIT
# completion.sh - the bash and zsh completions offer what the command takes
#
# The bash completion is run for real (COMP_WORDS set, the function called,
# COMPREPLY read): subcommands, every option that "dare-stream CMD --help"
# prints and no other, method names (the library's table in methods.c),
# enumerated values, model, recipe and directory arguments, Hugging Face
# ids of a cache.  The zsh completion must parse and name the same options
# and methods.
# shellcheck disable=SC2317 # functions run through check
# shellcheck source=cli/lib.sh
. "${DS_TESTLIB:-$(dirname "$0")/cli/lib.sh}"
ds_setup completion
srcdir=$(cd "${srcdir:-$(dirname "$0")/..}" && pwd) || hard_error "no srcdir"
BASHC=$srcdir/contrib/completion/dare-stream.bash
ZSHC=$srcdir/contrib/completion/_dare-stream
command -v bash >/dev/null 2>&1 || skip_all "no bash"

# comp WORD...: the completion of the last WORD of "dare-stream WORD...",
# one candidate a line, sorted, in $T/comp.
comp() {
	(cd "$T/files" && bash -c '
		. "$1"; shift
		COMP_WORDS=(dare-stream "$@")
		COMP_CWORD=$#
		COMP_LINE="dare-stream $*"
		_dare_stream
		printf "%s\n" "${COMPREPLY[@]}"' bash "$BASHC" "$@") |
		sed '/^$/d' | sort -u >"$T/comp"
}

# same WORDS...: $T/comp holds exactly the words (in any order).
same() {
	[ $# = 0 ] || printf '%s\n' "$@" | sort -u >"$T/want"
	[ $# != 0 ] || : >"$T/want"
	if cmp -s "$T/want" "$T/comp"; then
		return 0
	fi
	say "  expected: $(tr '\n' ' ' <"$T/want")"
	say "  offered:  $(tr '\n' ' ' <"$T/comp")"
	return 1
}

# help_opts CMD: the options "dare-stream CMD --help" prints, sorted, and
# -h, --help (which every command takes, though not all list them).
help_opts() {
	{
		"$DS_BIN" "$1" --help 2>&1 |
			grep -oE '(^|[ ,])--?[a-z][a-z-]*' | sed 's/^[ ,]//'
		printf '%s\n' -h --help
	} | sort -u
}

# The library's method names, from its table.
grep -oE '\[DS_M_[A-Z_]+\] = \{ "[a-z_]+"' "$srcdir/src/lib/methods/methods.c" |
	sed 's/.*"\(.*\)"/\1/' | sort -u >"$T/methods"
[ "$(wc -l <"$T/methods")" -ge 4 ] ||
	hard_error "no method names found in src/lib/methods/methods.c"

mkdir -p "$T/files/sub" "$T/files/hub/models--org--name/snapshots" \
	"$T/files/hub/models--solo"
: >"$T/files/a.safetensors"
: >"$T/files/b.json"
: >"$T/files/c.txt"
: >"$T/files/r.yml"

say "== bash: $BASHC"
check "bash parses it" bash -n "$BASHC"
comp ''
check "subcommands and top-level options" same merge inspect verify \
	finalize extract apply delta-stats -h --help -V --version
comp me
check "'me' completes to merge" same merge

for cmd in merge inspect verify finalize; do
	help_opts "$cmd" >"$T/help.$cmd"
	[ -s "$T/help.$cmd" ] || hard_error "$DS_BIN $cmd --help printed no option"
	comp "$cmd" -
	check "$cmd: exactly the options of '$cmd --help'" \
		same $(cat "$T/help.$cmd")
done

comp merge --method ''
check "--method: every method of the library" same $(cat "$T/methods")
comp merge --method dare_
check "--method dare_: the two dare methods" same dare_linear dare_ties
comp merge --method=del
check "--method=del: della, della_linear" same della della_linear
comp merge --method = d
check "--method = d (bash split at '=')" same \
	$(grep '^d' "$T/methods")
comp merge --rescale ''
check "--rescale: inverse l1 none" same inverse l1 none
comp merge --dtype ''
check "--dtype: bf16 f16 f32" same bf16 f16 f32
comp merge --io ''
check "--io: uring pread" same uring pread
comp merge --seed ''
check "--seed: nothing to offer" same

HF_HUB_CACHE=$T/files/hub
export HF_HUB_CACHE
comp merge -o out --base ''
check "--base: directories, .safetensors, .json, cached ids" \
	same a.safetensors b.json hub sub org/name
comp merge --model o
check "--model o: the cached id org/name" same org/name
comp merge --config ''
check "--config: directories and recipes" same hub sub r.yml
comp merge -o ''
check "-o: directories only" same hub sub
comp verify ''
check "verify: directories" same hub sub
comp inspect --json ''
check "inspect: model paths" same a.safetensors b.json hub sub org/name
unset HF_HUB_CACHE

say "== zsh: $ZSHC"
if command -v zsh >/dev/null 2>&1; then
	check "zsh parses it" zsh -n "$ZSHC"
	zsh_registers() {
		ds_f=$(HOME=$T zsh -f -c 'fpath=("$1" $fpath)
			autoload -Uz compinit && compinit -u -d "$2"
			print -r -- "${_comps[dare-stream]}"' zsh \
			"$(dirname "$ZSHC")" "$T/zcompdump")
		[ "$ds_f" = _dare-stream ] || { say "  _comps: '$ds_f'"; return 1; }
	}
	check "zsh: compinit binds it to dare-stream" zsh_registers
else
	say "skip zsh -n (no zsh)"
fi
check "zsh: #compdef dare-stream" grep -q '^#compdef dare-stream$' "$ZSHC"
# Each option appears as an _arguments spec: "--opt[", "--opt=[", "-o+"...
zsh_names() {
	for ds_o; do
		grep -qE -- "(['{,()*])$ds_o([]=+[',}]|\\[)" "$ZSHC" ||
			{ say "  $ds_o missing"; return 1; }
	done
}
for cmd in merge inspect verify finalize; do
	check "zsh: every option of '$cmd --help'" \
		zsh_names $(cat "$T/help.$cmd")
done
zsh_methods() {
	sed -n "s/.*--method=\[[^]]*\]:method:(\([^)]*\)).*/\1/p" "$ZSHC" |
		tr ' ' '\n' | sed '/^$/d' | sort -u >"$T/zm"
	cmp -s "$T/zm" "$T/methods" ||
		{ say "  zsh methods: $(tr '\n' ' ' <"$T/zm")"; return 1; }
}
check "zsh: --method offers every method of the library" zsh_methods

ds_finish
