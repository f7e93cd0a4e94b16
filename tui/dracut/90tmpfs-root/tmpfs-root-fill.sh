#!/bin/sh
# tmpfs-root-fill: fill $NEWROOT (a tmpfs) from the image on the source. Installed as
# /sbin/tmpfs-root-fill and run, as a program of its own, by the pre-mount hook
# (tmpfs-root.sh), so that none of its variables or functions stays in the shell of
# dracut's init. It mounts the source read-only, mounts a tmpfs on $NEWROOT, unpacks the
# image into it and unmounts the source. On failure it says why on the console and in
# $TR_RUN/failed, undoes its mounts and exits 1: the hook then takes dracut's failure path.
# Exits 0, doing nothing, when root= is not root=tmpfs:.
#
# TR_LIBDIR (default /lib), TR_DRACUT_LIB (/lib/dracut-lib.sh) and TR_URL_LIB
# (/lib/url-lib.sh) may be set for tests.

# shellcheck source=/dev/null # dracut's own library, in the initramfs
type getarg > /dev/null 2>&1 || . "${TR_DRACUT_LIB:-/lib/dracut-lib.sh}"
# shellcheck source=tmpfs-root-lib.sh
. "${TR_LIBDIR:-/lib}/tmpfs-root-lib.sh"
# shellcheck source=tmpfs-root-img-lib.sh
. "${TR_LIBDIR:-/lib}/tmpfs-root-img-lib.sh"
# shellcheck source=tmpfs-root-url-lib.sh
. "${TR_LIBDIR:-/lib}/tmpfs-root-url-lib.sh"
# shellcheck source=tmpfs-root-shards-lib.sh
. "${TR_LIBDIR:-/lib}/tmpfs-root-shards-lib.sh"

# What the steps below share (this program's own variables: none reaches init's shell):
# src img size sha opts, the kernel command line's (root=tmpfs:<src>, rd.tmpfs.*); file,
# the image (a path under the source's mount, or a URL); fmt, its format; bytes, the
# tmpfs's size; TR_REMOTE_SOURCE=yes for a source that need not answer the same twice.

# The rd.tmpfs.* parameters checked, each failure naming the one to fix.
_tr_check_args() {
    local bad
    [ -n "$img" ] || {
        tr_fail "no image given; accepted: a path on $src, e.g. images/rootfs.tar.zst" rd.tmpfs.imgfile
        return 1
    }
    case "/$img/" in
        //* | */../*)
            tr_fail "'$img' must be a relative path without '..'" rd.tmpfs.imgfile
            return 1
            ;;
    esac
    if [ -n "$size" ] && ! tr_size_bytes "$size" > /dev/null; then
        tr_fail "'$size' is not a tmpfs size; accepted: N, N[kmgtpe] or N%" rd.tmpfs.size
        return 1
    fi
    case "$sha" in
        '') ;;
        *[!0-9a-fA-F]*)
            tr_fail "'$sha' is not a sha256; accepted: 64 hex digits" rd.tmpfs.sha256
            return 1
            ;;
        *) [ ${#sha} -eq 64 ] || {
            tr_fail "'$sha' is not a sha256; accepted: 64 hex digits" rd.tmpfs.sha256
            return 1
        } ;;
    esac
    if [ -n "$opts" ] && ! bad=$(tr_check_opts "$opts"); then
        if [ "$bad" = huge=always ]; then
            tr_fail "tmpfs option huge=always not accepted: every file of the root would take a 2 MiB page of RAM; accepted: huge=within_size, huge=advise, huge=never" rd.tmpfs.opts
            return 1
        fi
        tr_fail "tmpfs option '$bad' not accepted; accepted: mpol=, nr_inodes=, huge=within_size|advise|never" rd.tmpfs.opts
        return 1
    fi
}

# An HTTP(S) source: the image's URL in $file, the network waited for, the first bytes
# fetched (tr_http_probe).
_tr_open_url() {
    file="${src%/}/$img"
    if [ -z "$sha" ] && [ "${src%%:*}" = http ] && ! getargbool 0 rd.tmpfs.insecure; then
        tr_fail "over plain http the image must be pinned: rd.tmpfs.sha256=<hex> (or rd.tmpfs.insecure=1 to boot whatever the network sends)" rd.tmpfs.sha256
        return 1
    fi
    command -v curl > /dev/null || {
        tr_fail "no curl in this initramfs (add dracut's url-lib module)" root=
        return 1
    }
    # dracut's url-lib.sh: its proxy= and curl settings (tmpfs-root-url-lib.sh says which)
    # shellcheck source=/dev/null # dracut's url-lib module, in the initramfs
    [ -e "${TR_URL_LIB:-/lib/url-lib.sh}" ] && . "${TR_URL_LIB:-/lib/url-lib.sh}"
    _tr_wait_for_network "$src" "${TR_HTTP_RETRY_MAX:-180}" \
        || tr_say "no network route after ${TR_HTTP_RETRY_MAX:-180} s (rd.retry); trying anyway"
    if ! tr_http_probe "$file"; then
        tr_fail "$(cat "$TR_RUN/why")" root=
        return 1
    fi
}

# An NFS source, mounted read-only on $TR_SRC_MNT with dracut's nfs-lib.sh.
_tr_mount_nfs() {
    local nfslib netif did
    nfslib=${TR_NFS_LIB:-/lib/nfs-lib.sh}
    [ -e "$nfslib" ] || {
        tr_fail "no NFS support in this initramfs (add dracut's nfs module)" root=
        return 1
    }
    # shellcheck source=/dev/null # dracut's nfs module, in the initramfs
    . "$nfslib"
    netif=
    for did in /tmp/net.*.did-setup; do
        [ -e "$did" ] || continue
        netif=${did#/tmp/net.}
        netif=${netif%.did-setup}
        break
    done
    # A server may answer a second read differently: a pinned image is verified in RAM.
    TR_REMOTE_SOURCE=yes
    if ! mount_nfs "${src#NFS=}" "$TR_SRC_MNT" "$netif"; then
        tr_fail "cannot mount the NFS export ${src#NFS=}" root=
        return 1
    fi
    # mount_nfs mounts read-write when the kernel command line says rw: not the source.
    # -i: the kernel remounts it; mount.nfs would need /etc/protocols, not in the initramfs.
    if ! mount -i -o remount,ro "$TR_SRC_MNT" 2> "$TR_RUN/mount.err"; then
        tr_fail "cannot make the NFS export ${src#NFS=} read-only: $(tail -n 1 "$TR_RUN/mount.err")" root=
        return 1
    fi
}

# A block device source, mounted read-only on $TR_SRC_MNT.
_tr_mount_dev() {
    local dev
    dev=$(tr_source_dev "$src")
    if [ ! -b "$dev" ]; then
        tr_fail "source $src not found ($dev missing)" root=
        return 1
    fi
    if ! mount -o ro "$dev" "$TR_SRC_MNT" 2> "$TR_RUN/mount.err"; then
        tr_fail "cannot mount $src read-only: $(tail -n 1 "$TR_RUN/mount.err")" root=
        return 1
    fi
}

# The image found on the source ($file) and its format ($fmt), refused when it is no archive.
_tr_find_image() {
    if _tr_is_url "$src"; then
        fmt=$(tr_format "$TR_RUN/http.bin")
    else
        file="$TR_SRC_MNT/$img"
        if [ ! -f "$file" ]; then
            tr_fail "$img not found on $src" rd.tmpfs.imgfile
            return 1
        fi
        fmt=$(tr_format "$file")
    fi
    if [ "$fmt" = unknown ]; then
        tr_fail "$img is not an archive (by its first bytes); accepted: tar, or tar with gzip, xz, zstd, bzip2, lz4" rd.tmpfs.imgfile
        return 1
    fi
}

# The tmpfs's size in $bytes, checked against the image and RAM before anything is
# unpacked, then the tmpfs mounted on $NEWROOT.
_tr_mount_tmpfs() {
    local csize usize choice avail
    csize=$(_tr_size "$file")
    usize=$(tr_uncompressed_size "$file" "$fmt")
    choice=$(tr_choose_size "$size" "$usize")
    bytes=${choice%% *}
    avail=$(tr_meminfo MemAvailable)
    if [ -n "$usize" ] && [ "$usize" -gt "$bytes" ]; then
        tr_fail "tmpfs of $(tr_human "$bytes") is too small for $img ($(tr_human "$usize") uncompressed)" rd.tmpfs.size
        return 1
    fi
    if [ -n "$usize" ] && [ "$usize" -gt "$((avail - 67108864))" ]; then
        tr_fail "$img needs $(tr_human "$usize") of RAM uncompressed, only $(tr_human "$avail") available" rd.tmpfs.imgfile
        return 1
    fi
    if [ "$bytes" -gt "$(tr_meminfo MemTotal)" ]; then
        tr_say "warning: tmpfs size $(tr_human "$bytes") is above RAM ($(tr_human "$(tr_meminfo MemTotal)")); the root can outgrow memory"
    fi
    tr_say "tmpfs of $(tr_human "$bytes") for / (${choice#* }); image $img, $fmt, $(tr_human "$csize")"

    if ! mount -t tmpfs -o "mode=0755,size=$bytes${opts:+,$opts}" tmpfs "$NEWROOT" 2> "$TR_RUN/mount.err"; then
        tr_fail "cannot mount the tmpfs: $(tail -n 1 "$TR_RUN/mount.err")" rd.tmpfs.opts
        return 1
    fi
}

# The image unpacked into $NEWROOT and the source unmounted; a failure names the parameter
# its cause points to.
_tr_fill_tmpfs() {
    local rc why
    tr_unpack "$file" "$fmt" "$NEWROOT" "$sha"
    rc=$?
    tr_cleanup
    if [ "$rc" -ne 0 ]; then
        why=$(cat "$TR_RUN/why" 2> /dev/null)
        case "$rc:$why" in
            3:*) tr_fail "${why:-sha256 mismatch}" rd.tmpfs.sha256 ;;
            4:*) tr_fail "${why:-fetching $file failed}" root= ;;
            *"tmpfs is full"*) tr_fail "$why" rd.tmpfs.size ;;
            *"tmpfs ran out of inodes"*) tr_fail "$why" rd.tmpfs.opts ;;
            *) tr_fail "${why:-unpacking $img failed}" rd.tmpfs.imgfile ;;
        esac
        return 1
    fi
    if [ ! -e "$NEWROOT/etc/os-release" ] && [ ! -e "$NEWROOT/usr/lib/os-release" ]; then
        tr_say "warning: the image has no /etc/os-release; systemd's switch-root needs one"
    fi
    if _tr_is_url "$src"; then
        tr_say "root filesystem ready in RAM, from $file"
    else
        tr_say "root filesystem ready in RAM; $src unmounted"
    fi
    return 0
}

tr_fill_root() {
    src=$(tr_source) || return 0
    img=$(getarg rd.tmpfs.imgfile=)
    size=$(getarg rd.tmpfs.size=)
    sha=$(getarg rd.tmpfs.sha256=)
    opts=$(getarg rd.tmpfs.opts=)
    mkdir -p "$TR_RUN" "$TR_SRC_MNT"
    # root's alone: it is carried into the booted system, where tmpfs-root takes its lock in it
    chmod 0700 "$TR_RUN"
    getarg rd.retry= > /dev/null && TR_HTTP_RETRY_MAX=$(getarg rd.retry=)
    _tr_check_args || return 1
    case "$src" in
        http://* | https://*) _tr_open_url || return 1 ;;
        NFS=*) _tr_mount_nfs || return 1 ;;
        *) _tr_mount_dev || return 1 ;;
    esac
    _tr_find_image || return 1
    _tr_mount_tmpfs || return 1
    _tr_fill_tmpfs
}

tr_fill_root
