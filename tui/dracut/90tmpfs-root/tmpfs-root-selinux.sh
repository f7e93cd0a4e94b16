#!/bin/sh
# tmpfs-root pre-pivot hook: restore SELinux contexts in the unpacked root when it
# enables SELinux (tr_selinux, below).

# shellcheck source=tmpfs-root-lib.sh
command -v tr_source > /dev/null || . /lib/tmpfs-root-lib.sh

# pre-pivot hook: when the unpacked root has SELinux enabled, load its policy and restore
# file contexts, as the original module did (a tar without --selinux support, or an image
# made without labels, leaves none).
tr_selinux() {
    local mode bin
    tr_source > /dev/null || return 0
    [ -e "$NEWROOT/etc/selinux/config" ] || return 0
    getargbool 1 selinux || return 0
    mode=$(sed -n 's/^SELINUX=//p' "$NEWROOT/etc/selinux/config")
    [ "$mode" = enforcing ] || [ "$mode" = permissive ] || return 0
    for bin in /sbin/load_policy /usr/sbin/load_policy; do
        [ -x "$NEWROOT$bin" ] && break
    done
    [ -x "$NEWROOT$bin" ] || {
        tr_say "warning: SELinux is $mode but the image has no load_policy"
        return 0
    }
    tr_say "restoring SELinux contexts (SELINUX=$mode)"
    chroot "$NEWROOT" "$bin" -i || tr_say "warning: load_policy failed"
    chroot "$NEWROOT" restorecon -R -e /proc -e /sys -e /dev / || tr_say "warning: restorecon failed"
}

tr_selinux
