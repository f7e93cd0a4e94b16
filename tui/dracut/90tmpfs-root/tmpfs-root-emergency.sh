#!/bin/sh
# tmpfs-root emergency hook: when the boot gave up waiting, say which source never appeared.

# shellcheck source=tmpfs-root-lib.sh
command -v tr_source > /dev/null || . /lib/tmpfs-root-lib.sh

tr_explain_missing_source
