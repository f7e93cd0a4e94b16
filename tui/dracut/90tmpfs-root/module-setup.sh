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
    # Only base: a network source's modules (url-lib, nfs) are added by tmpfs-root for the
    # plan's source (--add "tmpfs-root url-lib"). Listed here they would be hard
    # dependencies: where one cannot be installed (Debian 13 without systemd has no DHCP
    # client for network-legacy) dracut would leave tmpfs-root out altogether.
    echo base
    return 0
}

# called by dracut
installkernel() {
    # The source may be on any of these filesystems, whatever the host uses.
    hostonly='' instmods tmpfs loop ext4 ext3 xfs btrfs vfat iso9660 squashfs erofs \
        nls_utf8 nls_cp437 nls_iso8859-1
}

# called by dracut
install() {
    inst_simple "$moddir/tmpfs-root-lib.sh" /lib/tmpfs-root-lib.sh
    inst_hook cmdline 90 "$moddir/parse-tmpfs-root.sh"
    inst_hook pre-mount 90 "$moddir/tmpfs-root.sh"
    inst_hook pre-pivot 90 "$moddir/tmpfs-root-selinux.sh"
    inst_hook emergency 50 "$moddir/tmpfs-root-emergency.sh"
    inst_multiple tar cat tee dd od tr sed awk wc cut sha256sum mkfifo df sleep head tail grep
    # nproc: one worker per core for sharded images (the boot counts /proc/cpuinfo without it).
    inst_multiple -o nproc
    # An https source's own CA, when the admin put one there (url-lib brings curl's bundle).
    [[ -r $dracutsysrootdir/etc/tmpfs-root/ca.pem ]] && inst_simple /etc/tmpfs-root/ca.pem
    # Every decompressor the build host has, so any archive format can be unpacked.
    inst_multiple -o gzip pigz xz zstd bzip2 lbzip2 pbzip2 lz4
    if dracut_module_included "systemd"; then
        inst_script "$moddir/tmpfs-root-generator.sh" \
            "$systemdutildir/system-generators/tmpfs-root-generator"
    fi
}
