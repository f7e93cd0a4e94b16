#!/bin/sh
# tmpfs-root emergency hook: when the boot gave up waiting, say which source never appeared.

# shellcheck source=tmpfs-root-lib.sh
command -v tr_source > /dev/null || . /lib/tmpfs-root-lib.sh

if _tr_src=$(tr_source) && _tr_dev=$(tr_source_dev "$_tr_src") && [ ! -e "$_tr_dev" ]; then
    tr_say "source $_tr_src never appeared in $(getarg rd.retry= || echo 180) s (rd.retry); $_tr_dev is missing (root=)"
fi
unset _tr_src _tr_dev
