#!/bin/sh
# tmpfs-root pre-pivot hook: restore SELinux contexts in the unpacked root when it
# enables SELinux (tr_selinux in tmpfs-root-lib.sh).

# shellcheck source=tmpfs-root-lib.sh
command -v tr_source > /dev/null || . /lib/tmpfs-root-lib.sh

tr_selinux
