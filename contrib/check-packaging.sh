#!/bin/sh
# SPDX-License-Identifier: MIT
# check-packaging.sh - make install, the Debian packages and the RPMs, built
# from the make dist tarball and checked as installed
#
# Sourced by contrib/check.sh, after its builds (it uses build-plain and
# adds to the tally).  Alone, "sh contrib/check-packaging.sh" builds
# build-plain if needed, runs only these stages and prints the tally
# line.  Both install the tools with apt-get (debhelper lintian rpm rpm2cpio
# zsh bash-completion; not with DS_SKIP_DEPS=1); a stage whose tool is missing
# is skipped.
# With DS_INSTALL_PACKAGES=1 (as .ci/run sets it) and root, the .debs are
# installed in the system with apt-get and purged afterwards; otherwise
# they are unpacked with dpkg -x.
if [ -z "${top:-}" ]; then
	set -u
	cd "$(dirname "$0")/.." || exit 1
	top=$(pwd)
	jobs=$(nproc)
	passed=0 failed=0 skipped=0
	ds_alone=1
	if [ "${DS_SKIP_DEPS:-}" != 1 ]; then
		SUDO=
		[ "$(id -u)" = 0 ] || SUDO=sudo
		$SUDO apt-get install -y -qq --no-install-recommends \
			debhelper lintian rpm rpm2cpio zsh bash-completion >/dev/null ||
			echo "(could not install the packaging tools: those stages will be skipped)"
	fi
	[ -x configure ] || autoreconf -fi >/dev/null || exit 1
	if [ ! -f build-plain/Makefile ]; then
		mkdir -p build-plain &&
			(cd build-plain && "$top/configure" --quiet) || exit 1
	fi
	make -C build-plain -j"$jobs" >/dev/null || exit 1
fi

# Each stage logs to build-pkg/NAME.log and adds the checks of
# contrib/examples/check-installed.sh ("# check-installed: N checks, F
# failed") plus one for each build step; 77 from a stage is a skip.
pkg=$top/build-pkg
DS_MKFIXTURE=$top/build-plain/tests/mkfixture
export DS_MKFIXTURE
rm -rf "$pkg"
mkdir -p "$pkg"

# step NAME LOG CMD...: one check, the exit status of CMD, whose output
# goes to LOG (the end of it is shown when CMD fails).
step() {
	stepname=$1
	steplog=$2
	shift 2
	if "$@" >"$steplog" 2>&1; then
		passed=$((passed + 1))
		echo "$stepname: ok"
	else
		failed=$((failed + 1))
		echo "$stepname: FAILED ($steplog)"
		tail -n 30 "$steplog"
		return 1
	fi
}

# installed NAME ROOT PREFIX: check-installed.sh on what is under ROOT.
installed() {
	ilog=$pkg/$1-installed.log
	sh "$top/contrib/examples/check-installed.sh" "$2" "$3" >"$ilog" 2>&1
	counts=$(sed -n 's/^# check-installed: \([0-9]*\) checks, \([0-9]*\) failed$/\1 \2/p' \
		"$ilog")
	if [ -z "$counts" ]; then
		failed=$((failed + 1))
		tail -n 20 "$ilog"
		return 1
	fi
	# shellcheck disable=SC2086 # two numbers
	set -- $counts
	passed=$((passed + $1 - $2))
	failed=$((failed + $2))
	echo "installed files: $1 checks, $2 failed ($ilog)"
	[ "$2" = 0 ] || { grep '^FAIL' "$ilog"; return 1; }
}

# The dist tarball, which the .deb and the .rpm are built from.
tarball=
stage_dist() {
	step "make dist" "$pkg/dist.log" sh -c 'cd build-plain &&
		rm -f dare-stream-*.tar.gz && make dist' || return 1
	tarball=$(ls "$top"/build-plain/dare-stream-*.tar.gz)
}

# make install into a DESTDIR; uninstall leaves no file behind.
stage_install() {
	prefix=$(sed -n 's/^prefix = //p' build-plain/Makefile)
	step "make install DESTDIR=$pkg/destdir" "$pkg/install.log" \
		make -C build-plain install DESTDIR="$pkg/destdir" || return 1
	installed install "$pkg/destdir" "$prefix"
	step "make uninstall" "$pkg/uninstall.log" \
		make -C build-plain uninstall DESTDIR="$pkg/destdir" || return 1
	step "make uninstall leaves no file" "$pkg/uninstall-left.log" \
		sh -c '! find "$1" ! -type d | grep .' sh "$pkg/destdir"
}

stage_deb() {
	command -v dpkg-buildpackage >/dev/null && command -v dh >/dev/null ||
		{ echo "deb: SKIP (dpkg-buildpackage or debhelper missing)"; return 77; }
	d=$pkg/deb
	v=$(basename "$tarball" .tar.gz)
	mkdir -p "$d" && cp "$tarball" "$d/dare-stream_${v#dare-stream-}.orig.tar.gz" &&
		tar -xzf "$tarball" -C "$d" || return 1
	# The test suite runs above: nocheck here.
	step "dpkg-buildpackage -us -uc -b" "$pkg/deb.log" sh -c "cd '$d/$v' &&
		DEB_BUILD_OPTIONS='nocheck parallel=$jobs' \
		dpkg-buildpackage -us -uc -b" || return 1
	for deb in "$d"/*.deb; do
		echo "$(basename "$deb"):"
		dpkg-deb -c "$deb" |
			awk '$1 !~ /^d/ { print "  " $6 ($7 ? " " $7 " " $8 : "") }'
	done
	if command -v lintian >/dev/null; then
		# Every tag is shown (info and pedantic too); errors fail.
		step "lintian: no error" "$pkg/lintian.log" \
			lintian -I --pedantic --fail-on error "$d"/*.changes
		sed 's/^/lintian: /' "$pkg/lintian.log"
	else
		echo "lintian: SKIP (not installed)"
		skipped=$((skipped + 1))
	fi
	# On a throwaway CI machine (DS_INSTALL_PACKAGES=1, root), install
	# them for real, so that their dependencies must resolve; elsewhere
	# unpack them into a directory.
	# (Not where dpkg is told to drop man pages or documentation, as in
	# Debian's Docker images: the checks need them.)
	debs=$(ls "$d"/*.deb | grep -v -- '-dbgsym_')
	system=0
	if [ "${DS_INSTALL_PACKAGES:-}" = 1 ] && [ "$(id -u)" = 0 ]; then
		system=1
		if grep -Eqs '^path-exclude=?/usr/share/(man|doc)' \
			/etc/dpkg/dpkg.cfg.d/*; then
			echo "deb: dpkg excludes /usr/share/man or doc here: unpacking instead"
			system=0
		fi
	fi
	if [ "$system" = 1 ]; then
		# shellcheck disable=SC2086 # file names without spaces
		step "apt-get install the .debs" "$pkg/deb-install.log" \
			env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
			--no-install-recommends $debs || return 1
		installed deb "/" /usr
		DEBIAN_FRONTEND=noninteractive apt-get purge -y -qq \
			dare-stream libdare-stream0 libdare-stream-dev \
			>"$pkg/deb-purge.log" 2>&1
	else
		for deb in $debs; do
			dpkg -x "$deb" "$d/root" || return 1
		done
		installed deb "$d/root" /usr
	fi
}

stage_rpm() {
	command -v rpmbuild >/dev/null ||
		{ echo "rpm: SKIP (rpmbuild missing: apt-get install rpm)"; return 77; }
	r=$pkg/rpm
	mkdir -p "$r/SOURCES" "$r/root" && cp "$tarball" "$r/SOURCES/" || return 1
	# --nodeps: the BuildRequires name RPM packages, which a Debian
	# machine does not have (the Debian packages it has provide them).
	step "rpmbuild -bb --nodeps" "$pkg/rpm.log" rpmbuild -bb --nodeps \
		--nocheck --define "_topdir $r" \
		"$top/contrib/rpm/dare-stream.spec" || return 1
	for rpm in "$r"/RPMS/*/*.rpm; do
		echo "$(basename "$rpm"):"
		rpm -qlp "$rpm" 2>/dev/null | sed 's/^/  /'
		rpm2archive - <"$rpm" | tar -xzf - -C "$r/root" || return 1
	done
	installed rpm "$r/root" /usr
}

# stage NAME: run stage_NAME, timed; 77 counts as a skip, and a failure
# that no step or check counted counts once.
stage() {
	echo "== $1"
	t0=$(date +%s)
	failed0=$failed
	"stage_$1"
	rc=$?
	if [ "$rc" = 77 ]; then
		skipped=$((skipped + 1))
	elif [ "$rc" != 0 ]; then
		[ "$failed" = "$failed0" ] && failed=$((failed + 1))
		echo "$1: FAILED (logs in $pkg)"
	fi
	echo "$1: $(($(date +%s) - t0)) s"
}
stage dist
stage install
if [ -n "$tarball" ]; then
	stage deb
	stage rpm
fi

if [ "${ds_alone:-}" = 1 ]; then
	echo "$passed passed, $failed failed, $skipped skipped"
	[ "$failed" = 0 ]
fi
