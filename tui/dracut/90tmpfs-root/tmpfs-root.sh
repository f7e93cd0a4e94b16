#!/bin/sh
# tmpfs-root pre-mount hook: mount the source read-only, mount a tmpfs on
# $NEWROOT, unpack the image into it, unmount the source.
#
# It runs in the pre-mount hook in both initramfs flavours: without systemd it
# is sourced by init before the mount hooks; with systemd by
# dracut-pre-mount.service, which is ordered before sysroot.mount.  Failures of
# pre-mount hooks are otherwise ignored, so every failure goes through tr_fail:
# one line naming the cause and the parameter to fix, then dracut's failure
# path (emergency shell, or rd.emergency=reboot with rd.shell=0).

# shellcheck source=tmpfs-root-lib.sh
command -v tr_source > /dev/null || . /lib/tmpfs-root-lib.sh

tr_cleanup() {
    if ismounted "$TR_SRC_MNT" 2> /dev/null || grep -q " $TR_SRC_MNT " /proc/mounts 2> /dev/null; then
        umount "$TR_SRC_MNT" 2> /dev/null || umount -l "$TR_SRC_MNT" 2> /dev/null
    fi
    if [ "$1" = all ] && grep -q "^tmpfs $NEWROOT " /proc/mounts 2> /dev/null; then
        umount "$NEWROOT" 2> /dev/null || umount -l "$NEWROOT" 2> /dev/null
    fi
    return 0
}

# $1: what went wrong, $2: the kernel parameter to fix.
tr_fail() {
    tr_say "$1 ($2)"
    tr_cleanup all
    echo "tmpfs-root: $1 ($2)" > "$TR_RUN/failed"
    emergency_shell -n tmpfs-root "tmpfs-root: $1 ($2)"
    return 1
}

tr_main() {
    _tr_src=$(tr_source) || return 0
    _tr_img=$(getarg rd.tmpfs.imgfile=)
    _tr_size=$(getarg rd.tmpfs.size=)
    _tr_sha=$(getarg rd.tmpfs.sha256=)
    _tr_opts=$(getarg rd.tmpfs.opts=)
    mkdir -p "$TR_RUN" "$TR_SRC_MNT"

    [ -n "$_tr_img" ] || { tr_fail "no image given; accepted: a path on $_tr_src, e.g. images/rootfs.tar.zst" rd.tmpfs.imgfile; return 1; }
    case "/$_tr_img/" in
        //* | */../*) tr_fail "'$_tr_img' must be a relative path without '..'" rd.tmpfs.imgfile; return 1 ;;
    esac
    if [ -n "$_tr_size" ] && ! tr_size_bytes "$_tr_size" > /dev/null; then
        tr_fail "'$_tr_size' is not a tmpfs size; accepted: N, N[kmgtpe] or N%" rd.tmpfs.size
        return 1
    fi
    case "$_tr_sha" in
        '') ;;
        *[!0-9a-fA-F]*) tr_fail "'$_tr_sha' is not a sha256; accepted: 64 hex digits" rd.tmpfs.sha256; return 1 ;;
        *) [ ${#_tr_sha} -eq 64 ] || { tr_fail "'$_tr_sha' is not a sha256; accepted: 64 hex digits" rd.tmpfs.sha256; return 1; } ;;
    esac
    if [ -n "$_tr_opts" ] && ! _tr_bad=$(tr_check_opts "$_tr_opts"); then
        tr_fail "tmpfs option '$_tr_bad' not accepted; accepted: mpol=, nr_inodes=, huge=" rd.tmpfs.opts
        return 1
    fi

    case "$_tr_src" in
        NFS=*)
            _tr_nfslib=${TR_NFS_LIB:-/lib/nfs-lib.sh}
            [ -e "$_tr_nfslib" ] || { tr_fail "no NFS support in this initramfs (add dracut's nfs module)" root=; return 1; }
            # shellcheck source=/dev/null # dracut's nfs module, in the initramfs
            . "$_tr_nfslib"
            _tr_netif=
            for _tr_did in /tmp/net.*.did-setup; do
                [ -e "$_tr_did" ] || continue
                _tr_netif=${_tr_did#/tmp/net.}
                _tr_netif=${_tr_netif%.did-setup}
                break
            done
            if ! mount_nfs "${_tr_src#NFS=}" "$TR_SRC_MNT" "$_tr_netif"; then
                tr_fail "cannot mount the NFS export ${_tr_src#NFS=}" root=
                return 1
            fi
            # mount_nfs mounts read-write when the kernel command line says rw: not the source.
            # -i: the kernel remounts it; mount.nfs would need /etc/protocols, not in the initramfs.
            if ! mount -i -o remount,ro "$TR_SRC_MNT" 2> "$TR_RUN/mount.err"; then
                tr_fail "cannot make the NFS export ${_tr_src#NFS=} read-only: $(tail -n 1 "$TR_RUN/mount.err")" root=
                return 1
            fi
            ;;
        *)
            _tr_dev=$(tr_source_dev "$_tr_src")
            if [ ! -b "$_tr_dev" ]; then
                tr_fail "source $_tr_src not found ($_tr_dev missing)" root=
                return 1
            fi
            if ! mount -o ro "$_tr_dev" "$TR_SRC_MNT" 2> "$TR_RUN/mount.err"; then
                tr_fail "cannot mount $_tr_src read-only: $(tail -n 1 "$TR_RUN/mount.err")" root=
                return 1
            fi
            ;;
    esac

    _tr_file="$TR_SRC_MNT/$_tr_img"
    if [ ! -f "$_tr_file" ]; then
        tr_fail "$_tr_img not found on $_tr_src" rd.tmpfs.imgfile
        return 1
    fi
    _tr_fmt=$(tr_format "$_tr_file")
    if [ "$_tr_fmt" = unknown ]; then
        tr_fail "$_tr_img is not an archive (by its first bytes); accepted: tar, or tar with gzip, xz, zstd, bzip2, lz4" rd.tmpfs.imgfile
        return 1
    fi

    # RAM-fit check, before anything is unpacked.
    _tr_usize=$(tr_uncompressed_size "$_tr_file" "$_tr_fmt")
    _tr_choice=$(tr_choose_size "$_tr_size" "$_tr_usize")
    _tr_bytes=${_tr_choice%% *}
    _tr_avail=$(tr_meminfo MemAvailable)
    if [ -n "$_tr_usize" ] && [ "$_tr_usize" -gt "$_tr_bytes" ]; then
        tr_fail "tmpfs of $(tr_human "$_tr_bytes") is too small for $_tr_img ($(tr_human "$_tr_usize") uncompressed)" rd.tmpfs.size
        return 1
    fi
    if [ -n "$_tr_usize" ] && [ "$_tr_usize" -gt "$((_tr_avail - 67108864))" ]; then
        tr_fail "$_tr_img needs $(tr_human "$_tr_usize") of RAM uncompressed, only $(tr_human "$_tr_avail") available" rd.tmpfs.imgfile
        return 1
    fi
    if [ "$_tr_bytes" -gt "$(tr_meminfo MemTotal)" ]; then
        tr_say "warning: tmpfs size $(tr_human "$_tr_bytes") is above RAM ($(tr_human "$(tr_meminfo MemTotal)")); the root can outgrow memory"
    fi
    tr_say "tmpfs of $(tr_human "$_tr_bytes") for / (${_tr_choice#* }); image $_tr_img, $_tr_fmt, $(tr_human "$(wc -c < "$_tr_file")")"

    if ! mount -t tmpfs -o "mode=0755,size=$_tr_bytes${_tr_opts:+,$_tr_opts}" tmpfs "$NEWROOT" 2> "$TR_RUN/mount.err"; then
        tr_fail "cannot mount the tmpfs: $(tail -n 1 "$TR_RUN/mount.err")" rd.tmpfs.opts
        return 1
    fi
    tr_unpack "$_tr_file" "$_tr_fmt" "$NEWROOT" "$_tr_sha"
    _tr_rc=$?
    tr_cleanup
    if [ "$_tr_rc" -ne 0 ]; then
        _tr_why=$(cat "$TR_RUN/why" 2> /dev/null)
        case "$_tr_rc:$_tr_why" in
            3:*) tr_fail "${_tr_why:-sha256 mismatch}" rd.tmpfs.sha256 ;;
            *"tmpfs is full"*) tr_fail "$_tr_why" rd.tmpfs.size ;;
            *) tr_fail "${_tr_why:-unpacking $_tr_img failed}" rd.tmpfs.imgfile ;;
        esac
        return 1
    fi
    if [ ! -e "$NEWROOT/etc/os-release" ] && [ ! -e "$NEWROOT/usr/lib/os-release" ]; then
        tr_say "warning: the image has no /etc/os-release; systemd's switch-root needs one"
    fi
    tr_say "root filesystem ready in RAM; $_tr_src unmounted"
    return 0
}

tr_main
