#!/bin/sh
# tmpfs-root pre-pivot hook: a node booted from an image made once for many hosts
# (`tmpfs-root image create --generic`, which leaves the SSH host keys out) makes its own.
# Only with root=tmpfs:<source>, and only when the new root has systemd, this writes into
# the initramfs's /run (moved into the booted system at switch-root) the unit
# tmpfs-root-host-keys.service, wanted by ssh.service and sshd.service: in the booted
# system, before sshd, it runs that system's own `ssh-keygen -A` when /etc/ssh/sshd_config
# exists and no /etc/ssh/ssh_host_*_key does. Nothing of the image runs in the initramfs
# and the image is not changed: the unit never runs in an initramfs
# (ConditionPathExists=!/etc/initrd-release), and an image that holds its keys keeps them.
# Each file is written under a temporary name and renamed. TR_SYSTEMD_RUN (default
# /run/systemd/system) and NEWROOT may be set for tests.

# shellcheck source=tmpfs-root-lib.sh
command -v tr_source > /dev/null || . /lib/tmpfs-root-lib.sh

TR_HOST_KEYS_UNIT=tmpfs-root-host-keys.service

# The unit's text.
_tr_host_keys_unit() {
    printf '%s\n' \
        "# Written by tmpfs-root's initramfs (tmpfs-root-identity.sh): this node makes its own" \
        "# SSH host keys, which an image made for many hosts (image create --generic) leaves out." \
        "[Unit]" \
        "Description=SSH host keys of this node (tmpfs-root)" \
        "ConditionPathExists=!/etc/initrd-release" \
        "ConditionPathExists=/etc/ssh/sshd_config" \
        "ConditionPathExistsGlob=!/etc/ssh/ssh_host_*_key" \
        "Before=ssh.service sshd.service" \
        "" \
        "[Service]" \
        "Type=oneshot" \
        "RemainAfterExit=yes" \
        "ExecStart=ssh-keygen -A"
}

# File $1 written by the command $2...: under a temporary name beside it, then renamed.
_tr_write_atomic() {
    local file tmp
    file=$1
    shift
    tmp=${file%/*}/.${file##*/}.$$
    "$@" > "$tmp" && mv -f "$tmp" "$file" && return 0
    rm -f "$tmp"
    return 1
}

# A symbolic link $1 -> $2: made under a temporary name beside it, then renamed.
_tr_link_atomic() {
    local tmp
    tmp=${1%/*}/.${1##*/}.$$
    rm -f "$tmp"
    ln -s "$2" "$tmp" && mv -f "$tmp" "$1" && return 0
    rm -f "$tmp"
    return 1
}

tr_identity() {
    local dir root
    tr_source > /dev/null || return 0
    # systemd's directory in /run tells programs that systemd runs: not made for another init.
    root=${NEWROOT:-/sysroot}
    [ -e "$root/usr/lib/systemd/systemd" ] || [ -e "$root/lib/systemd/systemd" ] || return 0
    dir=${TR_SYSTEMD_RUN:-/run/systemd/system}
    if ! (
        umask 022
        mkdir -p "$dir/ssh.service.wants" "$dir/sshd.service.wants" || exit 1
        _tr_write_atomic "$dir/$TR_HOST_KEYS_UNIT" _tr_host_keys_unit || exit 1
        for wants in ssh sshd; do
            _tr_link_atomic "$dir/$wants.service.wants/$TR_HOST_KEYS_UNIT" "../$TR_HOST_KEYS_UNIT" || exit 1
        done
    ); then
        tr_say "warning: could not write $TR_HOST_KEYS_UNIT in $dir: this node makes no SSH host keys of its own"
    fi
    return 0
}

tr_identity
