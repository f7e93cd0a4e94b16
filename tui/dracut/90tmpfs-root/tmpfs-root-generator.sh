#!/bin/sh
# tmpfs-root systemd generator: with root=tmpfs:<source>, systemd-fstab-generator
# would write a sysroot.mount for the device "tmpfs:<source>", which fails.  We
# write our own into the early directory (which wins): a plain tmpfs.  The
# pre-mount hook (dracut-pre-mount.service, ordered before sysroot.mount) mounts
# and fills that tmpfs first, so sysroot.mount finds it already mounted.

GENERATOR_DIR=${2:-${1:-/tmp}}

# shellcheck source=/dev/null # dracut's own library, in the initramfs
type getarg > /dev/null 2>&1 || . /lib/dracut-lib.sh
# shellcheck source=tmpfs-root-lib.sh
command -v tr_source > /dev/null || . /lib/tmpfs-root-lib.sh

tr_source > /dev/null || exit 0

mkdir -p "$GENERATOR_DIR"
cat > "$GENERATOR_DIR/sysroot.mount" << UNIT
# Written by tmpfs-root-generator: / is a tmpfs filled by the tmpfs-root pre-mount hook.
[Unit]
Before=initrd-root-fs.target
After=dracut-pre-mount.service
DefaultDependencies=no

[Mount]
What=tmpfs
Where=/sysroot
Type=tmpfs
Options=mode=0755
UNIT
exit 0
