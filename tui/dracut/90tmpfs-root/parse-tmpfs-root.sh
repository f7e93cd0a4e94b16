#!/bin/sh
# tmpfs-root cmdline hook: claim root=tmpfs:<source> and wait for the source device.
# Sourced by dracut (systemd and non-systemd initramfs alike).

# shellcheck source=tmpfs-root-lib.sh
command -v tr_source > /dev/null || . /lib/tmpfs-root-lib.sh

if tr_source > /dev/null; then
    _tr_src=$(tr_source)
    # dracut must not try to mount root= itself: we fill $NEWROOT in pre-mount.
    # shellcheck disable=SC2034 # read by dracut's init and dracut-cmdline
    rootok=1
    case "$_tr_src" in
        NFS=*)
            # The network comes up through dracut's network modules (ip= rd.neednet=1).
            tr_say "root is a tmpfs filled from the NFS export ${_tr_src#NFS=}"
            ;;
        *)
            if _tr_dev=$(tr_source_dev "$_tr_src"); then
                tr_say "root is a tmpfs filled from $_tr_src ($_tr_dev)"
                wait_for_dev "$_tr_dev"
            else
                warn "tmpfs-root: '$_tr_src' is not a source; accepted: /dev/..., LABEL=, UUID=, PARTUUID=, PARTLABEL=, NFS=nfs:server:/export (root=)"
            fi
            ;;
    esac
    unset _tr_src _tr_dev
fi
