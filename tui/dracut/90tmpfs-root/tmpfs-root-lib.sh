#!/bin/sh
# tmpfs-root: the library every hook sources (naming the source, saying, failing). It is
# small on purpose: it is what dracut's init shell takes in. The work of filling the root
# is /sbin/tmpfs-root-fill (tmpfs-root-fill.sh), run by the pre-mount hook as a program of
# its own with the other libraries: tmpfs-root-img-lib.sh (formats, sizes, single-stream
# unpack), tmpfs-root-url-lib.sh (HTTP(S)) and tmpfs-root-shards-lib.sh (sharded images).
# POSIX sh plus `local` (as dracut's own modules use it: dash, bash and busybox sh
# have it), so nothing leaks into the shell of dracut's init that sources it.
#
# Kernel command line (compatible with the original dracut-tmpfs-root):
#   root=tmpfs:<source>        /dev/..., LABEL=, UUID=, PARTUUID=, PARTLABEL=,
#                              NFS=nfs:server:/export[,opts], NFS=nfs4:...,
#                              http://server[:port]/dir, https://...
#   rd.tmpfs.imgfile=<path>    archive path relative to the source's root
#   rd.tmpfs.size=<size>       tmpfs size= (N, N[kmgtpe], N%); optional
#   rd.tmpfs.sha256=<hex>      optional: abort unless the image has this hash
#   rd.tmpfs.opts=<opts>       optional: extra tmpfs options (mpol=, nr_inodes=, huge= but not always)
#   rd.tmpfs.insecure=1        optional: boot an unpinned image over plain http
#
# Files under $TR_RUN (/run/tmpfs-root, root's alone; carried into the booted system,
# where `tmpfs-root apply` takes its lock in it):
#   source/                    the source's mount point (TR_SRC_MNT), read-only
#   failed                     the line of a fill that failed: the hook's emergency shell says it
#   why                        the one-line reason of a failed unpack (the fill says it)
#   mount.err copy.err find.err curl.err tar.err   what those commands said
#   data                       the fifo a single-stream image is read through
#   st.read st.decomp st.tar   the exit status of each stage of the single-stream pipeline;
#   st.fetch st.copy st.probe  of curl's transfers;
#   st.over st.trailing        made when tar was given more than the image records
#   image.buf sha256           a pinned single-stream image copied into RAM, its hash
#   http.head http.bin http.tail http.size http.ranges   the first request to a server:
#                              its headers, first bytes (or whole index), last 64 bytes,
#                              the image's size, whether it answers range requests
#   index.bin index parts      a sharded image's index: as read, as checked, its parts
#   shard/                     one set per part N (and per run of shards, run.N.*): N.claim
#                              N.dd N.read N.decomp N.tar N.tar.err N.over N.buf N.sha
#                              N.why ("<rc> <reason>") N.done; abort stops the workers

TR_RUN=${TR_RUN:-/run/tmpfs-root}
TR_SRC_MNT=${TR_SRC_MNT:-$TR_RUN/source}

# Print a message on the console and in the kernel log. Not dracut-lib's info: in the
# systemd flavour it writes to stdout, which dracut-pre-mount.service sends to the
# journal only, and the boot's progress and failures must reach the console.
tr_say() {
    set -- "$(_tr_printable "$*")"
    echo "tmpfs-root: $1" >&2
    [ -w /dev/kmsg ] && echo "<5>tmpfs-root: $1" > /dev/kmsg 2> /dev/null
    return 0
}

# stdin's first $1 bytes, and "..." when there were more: a name from an image, bounded on
# the console.
_tr_cut() {
    local s
    s=$(head -c "$(($1 + 1))")
    if [ "${#s}" -gt "$1" ]; then
        printf '%s...' "$(printf '%s' "$s" | head -c "$1")"
    else
        printf '%s' "$s"
    fi
}

# $1 with every control character shown as '?': C0 and DEL, and C1 as UTF-8 writes them
# (U+0080-U+009F, among them U+009B, a terminal's CSI). What the console shows may come from
# an image or a server (an index line, a member's name, a server's words), and is shown,
# never acted on; other UTF-8 characters (a label's) stay.
_tr_printable() {
    printf '%s' "$1" | tr '\000-\037\177' '?????????????????????????????????' \
        | LC_ALL=C sed "s/$(printf '\302[\200-\237]')/?/g"
}

# The <source> part of root=tmpfs:<source>, or nothing when root= is not ours.
tr_source() {
    local root
    root=$(getarg root=)
    case "$root" in
        tmpfs:*) echo "${root#tmpfs:}" ;;
        *) return 1 ;;
    esac
}

# A LABEL or PARTLABEL as udev names its /dev/disk/by-label and by-partlabel links
# (blkid_encode_string): letters, digits, "#+-.:=@_" and the bytes of multi-byte UTF-8
# characters stay; every other byte becomes \xNN ("a&b(1)" -> "a\x26b\x281\x29").
tr_udev_escape() {
    local hex out
    out=
    for hex in $(printf '%s' "$1" | od -An -v -tx1); do
        case "$hex" in
            3[0-9] | 4[1-9a-f] | 5[0-9a] | 6[1-9a-f] | 7[0-9a] | 23 | 2b | 2d | 2e | 3a | 3d | 40 | 5f | [89a-f]?)
                # shellcheck disable=SC2059 # the format is the octal escape of the byte
                out="$out$(printf "\\$(printf '%o' "0x$hex")")"
                ;;
            *) out="$out\\x$hex" ;;
        esac
    done
    printf '%s' "$out"
}

# The device node for a block <source>; nothing for NFS. UUIDs keep their case, as udev
# keeps it in /dev/disk/by-uuid (upper case for FAT, lower for ext4), as dracut's
# label_uuid_to_dev does.
tr_source_dev() {
    case "$1" in
        LABEL=*) echo "/dev/disk/by-label/$(tr_udev_escape "${1#LABEL=}")" ;;
        PARTLABEL=*) echo "/dev/disk/by-partlabel/$(tr_udev_escape "${1#PARTLABEL=}")" ;;
        UUID=*) echo "/dev/disk/by-uuid/${1#UUID=}" ;;
        PARTUUID=*) echo "/dev/disk/by-partuuid/${1#PARTUUID=}" ;;
        /dev/*) echo "$1" ;;
        NFS=* | http://* | https://*) return 1 ;;
        *) return 2 ;;
    esac
}

# ------------------------------------------------------------ failing
# Every failure of the fill goes through tr_fail (in /sbin/tmpfs-root-fill): one line naming
# the cause and the parameter to fix, kept in $TR_RUN/failed; the pre-mount hook, in dracut's
# own shell, then takes dracut's failure path with that line (tr_emergency).

# Unmount the source; with $1 = all, the new root's tmpfs too.
tr_cleanup() {
    local what
    what=${1:-}
    if ismounted "$TR_SRC_MNT" 2> /dev/null || grep -q " $TR_SRC_MNT " /proc/mounts 2> /dev/null; then
        umount "$TR_SRC_MNT" 2> /dev/null || umount -l "$TR_SRC_MNT" 2> /dev/null
    fi
    if [ "$what" = all ] && grep -q "^tmpfs $NEWROOT " /proc/mounts 2> /dev/null; then
        umount "$NEWROOT" 2> /dev/null || umount -l "$NEWROOT" 2> /dev/null
    fi
    return 0
}

# Say what went wrong ($1) and the kernel parameter to fix ($2), undo the mounts, and keep
# the line in $TR_RUN/failed for tr_emergency. Fails.
tr_fail() {
    local what param
    what=$(_tr_printable "$1")
    param=$2
    tr_say "$what ($param)"
    tr_cleanup all
    echo "tmpfs-root: $what ($param)" > "$TR_RUN/failed"
    return 1
}

# dracut's failure path for a fill that failed, with the line tr_fail kept: the emergency
# shell (rd.shell), or what rd.emergency says. A fill that ended without one (killed) is
# said so here, its mounts undone.
tr_emergency() {
    local line
    line=$(cat "$TR_RUN/failed" 2> /dev/null)
    if [ -z "$line" ]; then
        tr_fail "filling the root ended without saying why" root=
        line=$(cat "$TR_RUN/failed" 2> /dev/null)
    fi
    emergency_shell -n tmpfs-root "${line:-tmpfs-root: filling the root ended without saying why (root=)}"
    return 1
}
