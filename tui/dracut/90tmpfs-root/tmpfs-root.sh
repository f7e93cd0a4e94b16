#!/bin/sh
# tmpfs-root pre-mount hook: fill $NEWROOT (a tmpfs) from the image on the source.
#
# It runs in the pre-mount hook in both initramfs flavours: without systemd it is
# sourced by init before the mount hooks; with systemd by dracut-pre-mount.service,
# which is ordered before sysroot.mount. Failures of pre-mount hooks are otherwise
# ignored, so tr_fill_root (tmpfs-root-lib.sh) takes dracut's failure path itself.

# shellcheck source=tmpfs-root-lib.sh
command -v tr_source > /dev/null || . /lib/tmpfs-root-lib.sh

tr_fill_root
