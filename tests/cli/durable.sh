#!/bin/sh
# SPDX-License-Identifier: MIT
# durable.sh - after "done", a power cut cannot lose the merge; the umask
#
# Under strace: the output directory and then its parent are fsynced after
# the last rename.  Files and the directory made follow the umask (027 gives
# 0640 and 0750, 002 0664 and 0775, 077 0600 and 0700).  Exit 77 when
# strace is missing or cannot trace here.
# Functions run through check look unreachable to shellcheck.
# shellcheck disable=SC2317
# shellcheck source=lib.sh
. "${DS_TESTLIB:-$(dirname "$0")/lib.sh}"
ds_setup durable
need_python
command -v strace >/dev/null 2>&1 || skip_all "strace not found"
strace -f -o /dev/null true 2>/dev/null || skip_all "strace cannot trace here"
mkfix "$T/fx" --models 1 --layers 2 --seed 62

say "== strace: the output directory and its parent are synced after renames"
mkdir -p "$T/par"
if (umask 027 && strace -f -y -qq -o "$T/trace" \
	-e trace=fsync,rename,renameat,renameat2 \
	"$DS_BIN" merge -q -o "$T/par/out" --base "$T/fx/base" \
	--model "$T/fx/ft1" --method task_arithmetic) \
	>"$T/stdout" 2>"$T/stderr"; then
	ok "merge under strace"
else
	fail "merge under strace"
	show_output
fi
# After the last rename: fsync of OUT's fd, then of its parent's.
check "fsync(OUT) then fsync(its parent) after the last rename" py '
par = os.path.realpath(sys.argv[2])
out = os.path.join(par, "out")
lines = [l for l in open(sys.argv[1]) if "(" in l]
ren = [i for i, l in enumerate(lines) if "rename" in l.split("(")[0]
       and "= 0" in l]
if not ren:
    sys.exit("no rename traced")
after = [l for l in lines[ren[-1] + 1:] if "fsync(" in l and "= 0" in l]
dirs = [l.split("<", 1)[1].split(">", 1)[0] for l in after if "<" in l]
if dirs[:2] != [out, par]:
    sys.exit("after the last rename, fsync of %s, expected %s" % (
        dirs, [out, par]))
' "$T/trace" "$T/par"
check "renames traced before them (some output files)" \
	test "$(grep -c 'rename' "$T/trace")" -ge 3

say "== files and the directory follow the umask"
# mode_ok DIR FILEMODE DIRMODE: every regular file of DIR has FILEMODE.
mode_ok() {
	py '
d, fm, dm = sys.argv[1], int(sys.argv[2], 8), int(sys.argv[3], 8)
bad = ["%s %o" % (n, os.stat(os.path.join(d, n)).st_mode & 0o7777)
       for n in os.listdir(d)
       if os.stat(os.path.join(d, n)).st_mode & 0o7777 != fm]
if os.stat(d).st_mode & 0o7777 != dm:
    bad.append("the directory %o" % (os.stat(d).st_mode & 0o7777))
if bad or len(os.listdir(d)) < 4:
    sys.exit("not %o (dir %o): %s" % (fm, dm, bad))
' "$@"
}
for mask in 027 002 077; do
	case $mask in
	027) fm=640 dm=750 ;;
	002) fm=664 dm=775 ;;
	077) fm=600 dm=700 ;;
	esac
	rm -rf "$T/um"
	(umask $mask && "$DS_BIN" merge -q -o "$T/um" --base "$T/fx/base" \
		--model "$T/fx/ft1" --method task_arithmetic) \
		>"$T/stdout" 2>"$T/stderr"
	check "umask $mask: files $fm, directory $dm" mode_ok "$T/um" $fm $dm
done

ds_finish
