#!/bin/sh
# tmpfs-root emergency hook: when the boot gave up waiting, say which source never appeared.

# shellcheck source=tmpfs-root-lib.sh
command -v tr_source > /dev/null || . /lib/tmpfs-root-lib.sh

# emergency hook: when the boot gave up waiting, say which source never appeared.
tr_explain_missing_source() {
    local src dev
    if src=$(tr_source) && dev=$(tr_source_dev "$src") && [ ! -e "$dev" ]; then
        tr_say "source $src never appeared in $(getarg rd.retry= || echo 180) s (rd.retry); $dev is missing (root=)"
    fi
    return 0
}

tr_explain_missing_source
