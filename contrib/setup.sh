#!/bin/sh
# SPDX-License-Identifier: MIT
# setup.sh - install the build dependencies (Debian/Ubuntu), build, run the demo
set -eu
cd "$(dirname "$0")/.."

SUDO=
[ "$(id -u)" = 0 ] || SUDO=sudo
DEPS="build-essential autoconf automake libtool pkg-config
      liburing-dev libzstd-dev zstd libxxhash-dev xxhash check
      libjansson-dev libyaml-dev python3 man-db groff-base"
if [ "${DS_SKIP_DEPS:-}" != 1 ]; then
	echo "== installing build dependencies (apt-get)"
	$SUDO apt-get update -qq
	# shellcheck disable=SC2086
	DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq \
		--no-install-recommends $DEPS >/dev/null
fi

echo "== building in build/"
[ -x configure ] || autoreconf -fi >/dev/null
mkdir -p build
cd build
[ -f Makefile ] || ../configure --quiet
make -j"$(nproc)" >/dev/null

echo "== demo: merging a generated base and two fine-tunes"
make -s demo
