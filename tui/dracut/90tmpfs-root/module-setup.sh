#!/bin/bash
# tmpfs-root dracut module: boot with / on a tmpfs filled from an archive.
# Included only on request: dracut --add tmpfs-root (it changes how root is mounted).
# moddir and systemdutildir are set by dracut.
# shellcheck disable=SC2154

# called by dracut
check() {
    require_binaries tar mount umount || return 1
    return 255
}

# called by dracut
depends() {
    echo base
    # A network source (NFS, HTTP(S)) needs dracut's nfs and url-lib modules and, through
    # them, a network handler. tmpfs-root names them (--add) for a plan's own build. A
    # generic build (-N) boots any source, so it takes them too, and so does a host-only one
    # when the installed plan's source is on the network: each only when dracut can install
    # it. As a hard dependency a module that cannot be installed here (no DHCP client,
    # systemd left out) would make dracut drop tmpfs-root altogether, local sources with it.
    _tr_network_wanted || return 0
    local mod why
    for mod in nfs url-lib; do
        # depends() runs in a subshell: this check leaves dracut's lists as they were.
        if why=$({ check_module "$mod" > /dev/null; } 2>&1); then
            echo "$mod"
        else
            why=${why%%$'\n'*} # dracut says the deepest cause first
            why=${why#dracut*: }
            dwarn "tmpfs-root: this initramfs cannot boot $(_tr_network_kind "$mod") sources: dracut's '$mod' module cannot be installed here${why:+ ($why)}"
        fi
    done
    return 0
}

_tr_network_wanted() {
    [[ $hostonly ]] || return 0
    grep -Eqs '^source = "[[:space:]]*(tmpfs:)?(NFS=|nfs4?:|https?://)' "$dracutsysrootdir/etc/tmpfs-root/plan.toml"
}

_tr_network_kind() {
    case $1 in
        nfs) echo NFS ;;
        *) echo "HTTP(S)" ;;
    esac
}

# called by dracut
installkernel() {
    # The source may be on any of these filesystems, whatever the host uses.
    hostonly='' instmods tmpfs loop ext4 ext3 xfs btrfs vfat iso9660 squashfs erofs \
        nls_utf8 nls_cp437 nls_iso8859-1
}

# called by dracut
install() {
    # The hooks source tmpfs-root-lib.sh alone; the fill, a program of its own, the rest.
    local lib
    for lib in tmpfs-root-lib.sh tmpfs-root-img-lib.sh tmpfs-root-url-lib.sh tmpfs-root-shards-lib.sh; do
        inst_simple "$moddir/$lib" "/lib/$lib"
    done
    inst_script "$moddir/tmpfs-root-fill.sh" /sbin/tmpfs-root-fill
    inst_hook cmdline 90 "$moddir/parse-tmpfs-root.sh"
    inst_hook pre-mount 90 "$moddir/tmpfs-root.sh"
    inst_hook pre-pivot 90 "$moddir/tmpfs-root-selinux.sh"
    inst_hook pre-pivot 91 "$moddir/tmpfs-root-identity.sh"
    inst_hook emergency 50 "$moddir/tmpfs-root-emergency.sh"
    inst_multiple tar cat tee dd od tr sed awk wc cut sha256sum mkfifo df sleep head tail grep
    # nproc: one worker per core for sharded images (the boot counts /proc/cpuinfo without it);
    # openssl: a pinned sha256 at the CPU's speed (sha256sum is the fallback).
    inst_multiple -o nproc openssl
    # find: a tar that cannot be told to make no link (not GNU tar) has each shard searched for one.
    inst_multiple -o find
    # An https source's own CA, when the admin put one there (url-lib brings curl's bundle).
    [[ -r $dracutsysrootdir/etc/tmpfs-root/ca.pem ]] && inst_simple /etc/tmpfs-root/ca.pem
    # Every decompressor the build host has, so any archive format can be unpacked.
    inst_multiple -o gzip pigz xz zstd bzip2 lbzip2 pbzip2 lz4
    if dracut_module_included "systemd"; then
        inst_script "$moddir/tmpfs-root-generator.sh" \
            "$systemdutildir/system-generators/tmpfs-root-generator"
    fi
}
