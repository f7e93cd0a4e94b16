#!/bin/sh
# tmpfs-root: functions shared by the cmdline hook, the pre-mount hook and the
# systemd generator.  POSIX sh: it runs under dracut's sh (dash or bash) and
# under busybox sh in the tests.
#
# Kernel command line (compatible with the original dracut-tmpfs-root):
#   root=tmpfs:<source>        /dev/..., LABEL=, UUID=, PARTUUID=, PARTLABEL=,
#                              NFS=nfs:server:/export[,opts], NFS=nfs4:...
#   rd.tmpfs.imgfile=<path>    archive path relative to the source's root
#   rd.tmpfs.size=<size>       tmpfs size= (N, N[kmgtpe], N%); optional
#   rd.tmpfs.sha256=<hex>      optional: abort unless the image has this hash
#   rd.tmpfs.opts=<opts>       optional: extra tmpfs options (mpol=, nr_inodes=, huge=)

TR_RUN=${TR_RUN:-/run/tmpfs-root}
TR_SRC_MNT=${TR_SRC_MNT:-$TR_RUN/source}

# Print a message on the console and in the kernel log.
tr_say() {
    echo "tmpfs-root: $*" >&2
    [ -w /dev/kmsg ] && echo "<5>tmpfs-root: $*" > /dev/kmsg 2> /dev/null
    return 0
}

# The <source> part of root=tmpfs:<source>, or nothing when root= is not ours.
tr_source() {
    _tr_root=$(getarg root=)
    case "$_tr_root" in
        tmpfs:*) echo "${_tr_root#tmpfs:}" ;;
        *) return 1 ;;
    esac
}

# Escape a LABEL/PARTLABEL the way udev names its /dev/disk/by-* links.
tr_udev_escape() {
    printf '%s' "$1" | sed 's,/,\\x2f,g;s, ,\\x20,g'
}

# The device node for a block <source>; nothing for NFS.
tr_source_dev() {
    case "$1" in
        LABEL=*) echo "/dev/disk/by-label/$(tr_udev_escape "${1#LABEL=}")" ;;
        PARTLABEL=*) echo "/dev/disk/by-partlabel/$(tr_udev_escape "${1#PARTLABEL=}")" ;;
        UUID=*) echo "/dev/disk/by-uuid/$(printf '%s' "${1#UUID=}" | tr '[:upper:]' '[:lower:]')" ;;
        PARTUUID=*) echo "/dev/disk/by-partuuid/$(printf '%s' "${1#PARTUUID=}" | tr '[:upper:]' '[:lower:]')" ;;
        /dev/*) echo "$1" ;;
        NFS=*) return 1 ;;
        *) return 2 ;;
    esac
}

# The archive format of a file from its first bytes: tar gzip xz zstd bzip2 lz4, or unknown.
tr_format() {
    _tr_magic=$(dd if="$1" bs=6 count=1 2> /dev/null | od -An -tx1 | tr -d ' \n')
    case "$_tr_magic" in
        1f8b*) echo gzip ;;
        fd377a585a00) echo xz ;;
        28b52ffd*) echo zstd ;;
        425a68*) echo bzip2 ;;
        04224d18*) echo lz4 ;;
        *)
            if [ "$(dd if="$1" bs=1 skip=257 count=5 2> /dev/null)" = "ustar" ]; then
                echo tar
            else
                echo unknown
            fi
            ;;
    esac
}

# The command that writes the uncompressed stream of stdin to stdout, fastest first.
tr_decompressor() {
    case "$1" in
        tar) echo "cat" ;;
        gzip)
            if command -v pigz > /dev/null; then echo "pigz -dc"; else echo "gzip -dc"; fi
            ;;
        xz)
            # Multi-threaded where the xz has it (not busybox's).
            if xz -T0 --version > /dev/null 2>&1; then echo "xz -dc -T0"; else echo "xz -dc"; fi
            ;;
        zstd) echo "zstd -dc" ;;
        bzip2)
            if command -v lbzip2 > /dev/null; then
                echo "lbzip2 -dc"
            elif command -v pbzip2 > /dev/null; then
                echo "pbzip2 -dc"
            else
                echo "bzip2 -dc"
            fi
            ;;
        lz4) echo "lz4 -dc" ;;
        *) return 1 ;;
    esac
}

# The uncompressed size in bytes when the format records it cheaply; nothing otherwise.
tr_uncompressed_size() {
    case "$2" in
        tar) wc -c < "$1" | tr -d ' ' ;;
        xz) xz --robot --list -- "$1" 2> /dev/null | sed -n 's/^totals\t[^\t]*\t[^\t]*\t[^\t]*\t\([0-9]*\).*/\1/p' ;;
        zstd) zstd -lv -- "$1" 2> /dev/null | sed -n 's/.*Decompressed Size:.*(\([0-9]*\) B).*/\1/p' | head -n 1 ;;
        *) return 0 ;;
    esac
}

# Bytes for a tmpfs size= value: N, N[kmgtpe], N% of MemTotal.  Fails on anything else.
tr_size_bytes() {
    _tr_total=$(tr_meminfo MemTotal)
    case "$1" in
        '' | *[!0-9kKmMgGtTpPeE%]* | [!0-9]*) return 1 ;;
        *%)
            _tr_n=$(_tr_decimal "${1%\%}") || return 1
            [ "$_tr_n" -ge 1 ] && [ "$_tr_n" -le 100 ] || return 1
            echo $((_tr_total * _tr_n / 100))
            ;;
        *[kK]) _tr_num "${1%?}" 10 ;;
        *[mM]) _tr_num "${1%?}" 20 ;;
        *[gG]) _tr_num "${1%?}" 30 ;;
        *[tT]) _tr_num "${1%?}" 40 ;;
        *[pP]) _tr_num "${1%?}" 50 ;;
        *[eE]) _tr_num "${1%?}" 60 ;;
        *) _tr_num "$1" 0 ;;
    esac
}

# A decimal number without leading zeros (which shell arithmetic would read as octal),
# of at most 18 digits (so that 64-bit arithmetic holds it); fails otherwise.
_tr_decimal() {
    case "$1" in '' | *[!0-9]*) return 1 ;; esac
    _tr_d=${1#"${1%%[!0]*}"}
    [ -n "$_tr_d" ] || _tr_d=0
    [ ${#_tr_d} -le 18 ] || return 1
    echo "$_tr_d"
}

# $1 << $2, refused when it is 0 or above 4 EiB (the shift would overflow).
_tr_num() {
    _tr_v=$(_tr_decimal "$1") || return 1
    [ "$_tr_v" -gt 0 ] && [ "$_tr_v" -le $((4611686018427387904 >> $2)) ] || return 1
    echo $((_tr_v << $2))
}

# A /proc/meminfo field in bytes.
tr_meminfo() {
    _tr_kb=$(sed -n "s/^$1: *\([0-9]*\) kB/\1/p" "${TR_MEMINFO:-/proc/meminfo}")
    echo $((${_tr_kb:-0} * 1024))
}

# Human-readable bytes: 1.5G, 340M, 12K.
tr_human() {
    awk -v b="$1" 'BEGIN {
        split("B K M G T P", u, " "); i = 1
        while (b >= 1024 && i < 6) { b /= 1024; i++ }
        if (i == 1) printf "%dB", b; else printf "%.1f%s", b, u[i] }'
}

# Check the extra tmpfs options; prints the rejected option and fails.
tr_check_opts() {
    _tr_ifs=$IFS
    IFS=,
    # shellcheck disable=SC2086
    set -- $1
    IFS=$_tr_ifs
    for _tr_o in "$@"; do
        case "$_tr_o" in
            mpol=default | mpol=local | mpol=prefer | mpol=prefer:[0-9]* | mpol=bind:[0-9]* | mpol=interleave | mpol=interleave:[0-9]*) ;;
            nr_inodes=[0-9]* | huge=never | huge=always | huge=within_size | huge=advise) ;;
            *)
                echo "$_tr_o"
                return 1
                ;;
        esac
    done
}

# Decide the tmpfs size in bytes: from rd.tmpfs.size, or from the image and RAM.
# $1 = rd.tmpfs.size value (may be empty), $2 = uncompressed size (may be empty).
# Prints "<bytes> <how it was chosen>".
tr_choose_size() {
    _tr_total=$(tr_meminfo MemTotal)
    if [ -n "$1" ]; then
        echo "$(tr_size_bytes "$1") rd.tmpfs.size=$1"
    elif [ -n "$2" ]; then
        # Headroom to run: half the image again, at least 256 MiB, capped at 90% of RAM.
        _tr_head=$(($2 / 2))
        [ "$_tr_head" -lt 268435456 ] && _tr_head=268435456
        _tr_want=$(($2 + _tr_head))
        _tr_cap=$((_tr_total * 9 / 10))
        [ "$_tr_want" -gt "$_tr_cap" ] && _tr_want=$_tr_cap
        echo "$_tr_want image $(tr_human "$2") uncompressed + $(tr_human "$_tr_head") headroom"
    else
        echo "$((_tr_total / 2)) 50% of RAM, image size unknown"
    fi
}

# Print progress every few seconds while the reader process $1 reads the image
# on its fd 0: bytes, percent of $2 (the compressed size), MB/s.
tr_progress_loop() {
    _tr_pid=$1
    _tr_total=$2
    _tr_every=${TR_PROGRESS_EVERY:-3}
    _tr_t0=$(cut -d. -f1 /proc/uptime)
    while kill -0 "$_tr_pid" 2> /dev/null; do
        # A background sleep, so that the kill at the end of the unpack stops us at once.
        sleep "$_tr_every" > /dev/null 2>&1 &
        wait $!
        _tr_pos=$(sed -n 's/^pos:[[:space:]]*//p' "/proc/$_tr_pid/fdinfo/0" 2> /dev/null)
        [ -n "$_tr_pos" ] || continue
        _tr_t=$(($(cut -d. -f1 /proc/uptime) - _tr_t0))
        [ "$_tr_t" -gt 0 ] || _tr_t=1
        tr_say "unpacking: $(tr_human "$_tr_pos") of $(tr_human "$_tr_total") read" \
            "($((_tr_pos * 100 / (_tr_total + 1)))%), $((_tr_pos / _tr_t / 1048576)) MB/s"
    done
}

# Unpack archive $1 of format $2 into directory $3, hashing it while it is read
# when $4 (expected sha256) is given.  Fails with a one-line reason in $TR_RUN/why.
tr_unpack() {
    _tr_file=$1
    _tr_fmt=$2
    _tr_dest=$3
    _tr_sha=$4
    _tr_decomp=$(tr_decompressor "$_tr_fmt") || return 1
    command -v "${_tr_decomp%% *}" > /dev/null || {
        echo "no ${_tr_decomp%% *} in the initramfs for this $_tr_fmt image" > "$TR_RUN/why"
        return 1
    }
    _tr_taropts="-x -p --numeric-owner"
    if tar --help 2> /dev/null | grep -q -- '--xattrs'; then
        _tr_taropts="$_tr_taropts --xattrs --xattrs-include=*"
        tar --help 2> /dev/null | grep -q -- '--acls' && _tr_taropts="$_tr_taropts --acls"
        tar --help 2> /dev/null | grep -q -- '--selinux' && _tr_taropts="$_tr_taropts --selinux"
    fi
    rm -f "$TR_RUN/data" "$TR_RUN/hash" "$TR_RUN"/st.*
    mkfifo "$TR_RUN/data" || return 1
    # The reader has the image on its fd 0, so its position is the progress.
    cat < "$_tr_file" > "$TR_RUN/data" &
    _tr_reader=$!
    tr_progress_loop "$_tr_reader" "$(wc -c < "$_tr_file")" &
    _tr_progress=$!
    if [ -n "$_tr_sha" ]; then
        mkfifo "$TR_RUN/hash" || return 1
        sha256sum < "$TR_RUN/hash" > "$TR_RUN/sha256" &
        _tr_hasher=$!
        _tr_tee="tee $TR_RUN/hash"
    else
        _tr_tee="cat"
    fi
    # shellcheck disable=SC2086
    { $_tr_tee < "$TR_RUN/data"; echo $? > "$TR_RUN/st.read"; } \
        | { $_tr_decomp; echo $? > "$TR_RUN/st.decomp"; } \
        | { tar -C "$_tr_dest" $_tr_taropts -f - 2> "$TR_RUN/tar.err"; echo $? > "$TR_RUN/st.tar"; }
    wait "$_tr_reader"
    [ -n "$_tr_sha" ] && wait "$_tr_hasher"
    kill "$_tr_progress" 2> /dev/null
    wait "$_tr_progress" 2> /dev/null
    # A full tmpfs first: tar stops, and the decompressor then fails on the broken pipe
    # (SIGPIPE, or an error exit), which must not be blamed on the archive.
    if [ "$(cat "$TR_RUN/st.tar")" != 0 ] && grep -q "No space left" "$TR_RUN/tar.err"; then
        echo "the tmpfs is full: the image does not fit in $(tr_human "$(_tr_fs_size "$_tr_dest")")" > "$TR_RUN/why"
        return 1
    fi
    if [ "$(cat "$TR_RUN/st.decomp")" != 0 ]; then
        echo "${_tr_file##*/} is not a valid $_tr_fmt archive (${_tr_decomp%% *} failed)" > "$TR_RUN/why"
        return 1
    fi
    if [ "$(cat "$TR_RUN/st.tar")" != 0 ]; then
        echo "tar failed: $(grep -v '^$' "$TR_RUN/tar.err" | tail -n 1)" > "$TR_RUN/why"
        return 1
    fi
    tr_say "unpacked $(tr_human "$(wc -c < "$_tr_file")") ($_tr_fmt) into $(tr_human "$(_tr_fs_used "$_tr_dest")")"
    if [ -n "$_tr_sha" ]; then
        _tr_got=$(cut -d' ' -f1 "$TR_RUN/sha256")
        if [ "$_tr_got" != "$(printf '%s' "$_tr_sha" | tr '[:upper:]' '[:lower:]')" ]; then
            echo "sha256 of the image is $_tr_got, not the expected one" > "$TR_RUN/why"
            return 3
        fi
        tr_say "sha256 verified"
    fi
    return 0
}

_tr_fs_used() {
    df -k "$1" 2> /dev/null | awk 'NR == 2 { printf "%.0f\n", $3 * 1024 }'
}

_tr_fs_size() {
    df -k "$1" 2> /dev/null | awk 'NR == 2 { printf "%.0f\n", $2 * 1024 }'
}
