#!/bin/sh
# tmpfs-root pre-mount hook: fill $NEWROOT (a tmpfs) from the image on the source.
#
# It runs in the pre-mount hook in both initramfs flavours: without systemd it is
# sourced by init before the mount hooks; with systemd by dracut-pre-mount.service,
# which is ordered before sysroot.mount. The fill is a program of its own,
# /sbin/tmpfs-root-fill (tmpfs-root-fill.sh), so that nothing of it stays in this shell.
# Failures of pre-mount hooks are otherwise ignored, so when it fails this hook takes
# dracut's failure path itself (tr_emergency, tmpfs-root-lib.sh). TR_FILL may be set for
# tests.

# shellcheck source=tmpfs-root-lib.sh
command -v tr_source > /dev/null || . /lib/tmpfs-root-lib.sh

if tr_source > /dev/null && ! NEWROOT=$NEWROOT TR_RUN=$TR_RUN "${TR_FILL:-/sbin/tmpfs-root-fill}"; then
    tr_emergency
fi
