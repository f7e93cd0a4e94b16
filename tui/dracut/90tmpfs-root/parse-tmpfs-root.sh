#!/bin/sh
# tmpfs-root cmdline hook: claim root=tmpfs:<source> and wait for the source device.
# Sourced by dracut (systemd and non-systemd initramfs alike).

# shellcheck source=tmpfs-root-lib.sh
command -v tr_source > /dev/null || . /lib/tmpfs-root-lib.sh

# cmdline hook: claim root=tmpfs:<source> (rootok=1: dracut must not mount root= itself,
# we fill $NEWROOT in pre-mount) and wait for the source device.
tr_claim_root() {
    local src dev
    src=$(tr_source) || return 0
    # shellcheck disable=SC2034 # read by dracut's init and dracut-cmdline
    rootok=1
    case "$src" in
        NFS=*)
            # The network comes up through dracut's network modules (ip= rd.neednet=1).
            tr_say "root is a tmpfs filled from the NFS export ${src#NFS=}"
            ;;
        http://* | https://*)
            tr_say "root is a tmpfs filled from $src (over the network: ip= rd.neednet=1)"
            ;;
        *)
            if dev=$(tr_source_dev "$src"); then
                tr_say "root is a tmpfs filled from $src ($dev)"
                wait_for_dev "$dev"
            else
                warn "tmpfs-root: '$src' is not a source; accepted: /dev/..., LABEL=, UUID=, PARTUUID=, PARTLABEL=, NFS=nfs:server:/export, http(s)://server/dir (root=)"
            fi
            ;;
    esac
}

tr_claim_root
