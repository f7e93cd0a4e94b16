#!/bin/sh
# tmpfs-root cmdline hook: claim root=tmpfs:<source> and wait for the source device.
# Sourced by dracut (systemd and non-systemd initramfs alike).

# shellcheck source=tmpfs-root-lib.sh
command -v tr_source > /dev/null || . /lib/tmpfs-root-lib.sh

tr_claim_root
