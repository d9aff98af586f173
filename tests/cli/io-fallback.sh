#!/bin/sh
# SPDX-License-Identifier: MIT
# io-fallback.sh - io_uring refused (seccomp EPERM): pread with a notice, same bytes
# shellcheck source=lib.sh
. "${DS_TESTLIB:-$(dirname "$0")/lib.sh}"
ds_setup io-fallback

NO_URING=${DS_NO_URING:-$(dirname "$DS_MKFIXTURE")/no_uring}
[ -x "$NO_URING" ] || hard_error "no_uring helper '$NO_URING' missing"
"$NO_URING" true || skip_all "seccomp filters cannot be installed here"

FX=$T/fx
mkfix "$FX" --models 2 --seed 13 --hidden 128 --vocab 512
inputs_record "$FX"
M="--method dare_ties -p 0.8 --base $FX/base --model $FX/ft1 --model $FX/ft2"

say "== io_uring available: the default backend"
# shellcheck disable=SC2086
"$DS_BIN" merge -o "$T/probe" --io uring --quiet $M 2>/dev/null ||
	skip_all "io_uring is not available on this machine"
# shellcheck disable=SC2086
ds_merge "$T/uring" --io uring --quiet $M
say "== io_uring refused: automatic fallback with a one-line notice"
# shellcheck disable=SC2086
run "$NO_URING" "$DS_BIN" merge -o "$T/fallback" $M
check "exit 0 (got $ds_rc)" [ "$ds_rc" -eq 0 ]
stderr_has "notice names the fallback" \
	'io_uring unavailable \(Operation not permitted\): using pread'
check "same bytes as the io_uring run" \
	cmp "$T/uring/model-00001-of-00002.safetensors" \
	"$T/fallback/model-00001-of-00002.safetensors"
check "same checksums of the shards" sh -c \
	"grep safetensors '$T/uring/CHECKSUMS.xxh128' >'$T/a' &&
	 grep safetensors '$T/fallback/CHECKSUMS.xxh128' >'$T/b' &&
	 cmp '$T/a' '$T/b'"
say "== io_uring asked for but refused: an error, nothing written"
# shellcheck disable=SC2086
run_expect 1 'io_uring cannot be set up' "$NO_URING" "$DS_BIN" merge \
	-o "$T/forced" --io uring $M
no_output "$T/forced"

ds_finish
