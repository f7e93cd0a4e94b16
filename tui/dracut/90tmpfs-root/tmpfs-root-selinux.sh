#!/bin/sh
# tmpfs-root pre-pivot hook: when the unpacked root has SELinux enabled, load
# its policy and restore file contexts, as the original module did (a tar
# without --selinux support, or an image made without labels, leaves none).

# shellcheck source=tmpfs-root-lib.sh
command -v tr_source > /dev/null || . /lib/tmpfs-root-lib.sh

tr_selinux() {
    tr_source > /dev/null || return 0
    [ -e "$NEWROOT/etc/selinux/config" ] || return 0
    getargbool 1 selinux || return 0
    _tr_mode=$(sed -n 's/^SELINUX=//p' "$NEWROOT/etc/selinux/config")
    [ "$_tr_mode" = enforcing ] || [ "$_tr_mode" = permissive ] || return 0
    for _tr_bin in /sbin/load_policy /usr/sbin/load_policy; do
        [ -x "$NEWROOT$_tr_bin" ] && break
    done
    [ -x "$NEWROOT$_tr_bin" ] || { tr_say "warning: SELinux is $_tr_mode but the image has no load_policy"; return 0; }
    tr_say "restoring SELinux contexts (SELINUX=$_tr_mode)"
    chroot "$NEWROOT" "$_tr_bin" -i || tr_say "warning: load_policy failed"
    chroot "$NEWROOT" restorecon -R -e /proc -e /sys -e /dev / || tr_say "warning: restorecon failed"
}

tr_selinux
