#!/bin/sh
# tmpfs-root: the module's functions, shared by the cmdline hook, the pre-mount hook,
# the emergency hook and the systemd generator; the hooks only call them.
# POSIX sh plus `local` (as dracut's own modules use it: dash, bash and busybox sh
# have it), so nothing leaks into the shell of dracut's init that sources it.
#
# Kernel command line (compatible with the original dracut-tmpfs-root):
#   root=tmpfs:<source>        /dev/..., LABEL=, UUID=, PARTUUID=, PARTLABEL=,
#                              NFS=nfs:server:/export[,opts], NFS=nfs4:...,
#                              http://server[:port]/dir, https://...
#   rd.tmpfs.imgfile=<path>    archive path relative to the source's root
#   rd.tmpfs.size=<size>       tmpfs size= (N, N[kmgtpe], N%); optional
#   rd.tmpfs.sha256=<hex>      optional: abort unless the image has this hash
#   rd.tmpfs.opts=<opts>       optional: extra tmpfs options (mpol=, nr_inodes=, huge= but not always)
#   rd.tmpfs.insecure=1        optional: boot an unpinned image over plain http

TR_RUN=${TR_RUN:-/run/tmpfs-root}
TR_SRC_MNT=${TR_SRC_MNT:-$TR_RUN/source}

# Print a message on the console and in the kernel log. Not dracut-lib's info: in the
# systemd flavour it writes to stdout, which dracut-pre-mount.service sends to the
# journal only, and the boot's progress and failures must reach the console.
tr_say() {
    set -- "$(_tr_printable "$*")"
    echo "tmpfs-root: $1" >&2
    [ -w /dev/kmsg ] && echo "<5>tmpfs-root: $1" > /dev/kmsg 2> /dev/null
    return 0
}

# stdin's first $1 bytes, and "..." when there were more: a name from an image, bounded on
# the console.
_tr_cut() {
    local s
    s=$(head -c "$(($1 + 1))")
    if [ "${#s}" -gt "$1" ]; then
        printf '%s...' "$(printf '%s' "$s" | head -c "$1")"
    else
        printf '%s' "$s"
    fi
}

# $1 with every control character shown as '?': C0 and DEL, and C1 as UTF-8 writes them
# (U+0080-U+009F, among them U+009B, a terminal's CSI). What the console shows may come from
# an image or a server (an index line, a member's name, a server's words), and is shown,
# never acted on; other UTF-8 characters (a label's) stay.
_tr_printable() {
    printf '%s' "$1" | tr '\000-\037\177' '?????????????????????????????????' \
        | LC_ALL=C sed "s/$(printf '\302[\200-\237]')/?/g"
}

# The <source> part of root=tmpfs:<source>, or nothing when root= is not ours.
tr_source() {
    local root
    root=$(getarg root=)
    case "$root" in
        tmpfs:*) echo "${root#tmpfs:}" ;;
        *) return 1 ;;
    esac
}

# A LABEL or PARTLABEL as udev names its /dev/disk/by-label and by-partlabel links
# (blkid_encode_string): letters, digits, "#+-.:=@_" and the bytes of multi-byte UTF-8
# characters stay; every other byte becomes \xNN ("a&b(1)" -> "a\x26b\x281\x29").
tr_udev_escape() {
    local hex out
    out=
    for hex in $(printf '%s' "$1" | od -An -v -tx1); do
        case "$hex" in
            3[0-9] | 4[1-9a-f] | 5[0-9a] | 6[1-9a-f] | 7[0-9a] | 23 | 2b | 2d | 2e | 3a | 3d | 40 | 5f | [89a-f]?)
                # shellcheck disable=SC2059 # the format is the octal escape of the byte
                out="$out$(printf "\\$(printf '%o' "0x$hex")")"
                ;;
            *) out="$out\\x$hex" ;;
        esac
    done
    printf '%s' "$out"
}

# The device node for a block <source>; nothing for NFS. UUIDs keep their case, as udev
# keeps it in /dev/disk/by-uuid (upper case for FAT, lower for ext4), as dracut's
# label_uuid_to_dev does.
tr_source_dev() {
    case "$1" in
        LABEL=*) echo "/dev/disk/by-label/$(tr_udev_escape "${1#LABEL=}")" ;;
        PARTLABEL=*) echo "/dev/disk/by-partlabel/$(tr_udev_escape "${1#PARTLABEL=}")" ;;
        UUID=*) echo "/dev/disk/by-uuid/${1#UUID=}" ;;
        PARTUUID=*) echo "/dev/disk/by-partuuid/${1#PARTUUID=}" ;;
        /dev/*) echo "$1" ;;
        NFS=* | http://* | https://*) return 1 ;;
        *) return 2 ;;
    esac
}

# The archive format of a file from its first bytes: sharded (`tmpfs-root image create`'s
# index in a zstd skippable frame, then zstd shards), tar gzip xz zstd bzip2 lz4, or unknown.
tr_format() {
    local magic
    magic=$(dd if="$1" bs=26 count=1 2> /dev/null | od -An -tx1 | tr -d ' \n')
    case "$magic" in
        5e2a4d18????????746d7066732d726f6f742d696e6465782031) echo sharded ;;
        1f8b*) echo gzip ;;
        fd377a585a00*) echo xz ;;
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
        zstd | sharded) echo "zstd -dc" ;;
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
    local recorded
    if _tr_is_url "$1"; then  # from what tr_http_probe fetched
        case "$2" in
            sharded) tr_index "$TR_RUN/http.bin" "$(_tr_size "$1")" | sed -n 's/^total //p' ;;
            tar) _tr_size "$1" ;;
            *) [ -s "$TR_RUN/http.tail" ] && tr_recorded_size "$TR_RUN/http.tail" ;;
        esac
        return 0
    fi
    if [ "$2" = sharded ]; then
        tr_index "$1" | sed -n 's/^total //p'
        return 0
    fi
    recorded=$(tr_recorded_size "$1")
    if [ -n "$recorded" ]; then
        echo "$recorded"
        return 0
    fi
    case "$2" in
        tar) wc -c < "$1" | tr -d ' ' ;;
        xz) xz --robot --list -- "$1" 2> /dev/null | sed -n 's/^totals\t[^\t]*\t[^\t]*\t[^\t]*\t\([0-9]*\).*/\1/p' ;;
        zstd) zstd -lv -- "$1" 2> /dev/null | sed -n 's/.*Decompressed Size:.*(\([0-9]*\) B).*/\1/p' | head -n 1 ;;
        *) return 0 ;;
    esac
}

# The uncompressed size `tmpfs-root image create` records at the end of a gzip, zstd or lz4
# image ("tmpfs-root-size=N" in an empty gzip member's comment, or a skippable frame).
tr_recorded_size() {
    tail -c 64 "$1" 2> /dev/null | tr -c '0-9a-z=-' '\n' | sed -n 's/^tmpfs-root-size=\([0-9]\{1,18\}\)$/\1/p' | tail -n 1
}

# Bytes for a tmpfs size= value: N, N[kmgtpe], N% of MemTotal.  Fails on anything else.
tr_size_bytes() {
    local total n
    total=$(tr_meminfo MemTotal)
    case "$1" in
        '' | *[!0-9kKmMgGtTpPeE%]* | [!0-9]*) return 1 ;;
        *%)
            n=$(_tr_decimal "${1%\%}") || return 1
            [ "$n" -ge 1 ] && [ "$n" -le 100 ] || return 1
            echo $((total * n / 100))
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
    local d
    case "$1" in '' | *[!0-9]*) return 1 ;; esac
    d=${1#"${1%%[!0]*}"}
    [ -n "$d" ] || d=0
    [ ${#d} -le 18 ] || return 1
    echo "$d"
}

# $1 << $2, refused when it is 0 or above 4 EiB (the shift would overflow).
_tr_num() {
    local v
    v=$(_tr_decimal "$1") || return 1
    [ "$v" -gt 0 ] && [ "$v" -le $((4611686018427387904 >> $2)) ] || return 1
    echo $((v << $2))
}

# A /proc/meminfo field in bytes.
tr_meminfo() {
    local kb
    kb=$(sed -n "s/^$1: *\([0-9]*\) kB/\1/p" "${TR_MEMINFO:-/proc/meminfo}")
    echo $((${kb:-0} * 1024))
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
    local ifs o
    ifs=$IFS
    IFS=,
    # shellcheck disable=SC2086
    set -- $1
    IFS=$ifs
    for o in "$@"; do
        case "$o" in
            mpol=default | mpol=local | mpol=prefer | mpol=prefer:[0-9]* | mpol=bind:[0-9]* | mpol=interleave | mpol=interleave:[0-9]*) ;;
            # Not huge=always: every file of the root would take a 2 MiB page of RAM.
            nr_inodes=[0-9]* | huge=never | huge=within_size | huge=advise) ;;
            *)
                echo "$o"
                return 1
                ;;
        esac
    done
}

# Decide the tmpfs size in bytes: from rd.tmpfs.size, or from the image and RAM.
# $1 = rd.tmpfs.size value (may be empty), $2 = uncompressed size (may be empty).
# Prints "<bytes> <how it was chosen>".
tr_choose_size() {
    local total head want cap
    total=$(tr_meminfo MemTotal)
    if [ -n "$1" ]; then
        echo "$(tr_size_bytes "$1") rd.tmpfs.size=$1"
    elif [ -n "$2" ]; then
        # Headroom to run: half the image again, at least 256 MiB, capped at 90% of RAM.
        head=$(($2 / 2))
        [ "$head" -lt 268435456 ] && head=268435456
        want=$(($2 + head))
        cap=$((total * 9 / 10))
        [ "$want" -gt "$cap" ] && want=$cap
        echo "$want image $(tr_human "$2") uncompressed + $(tr_human "$head") headroom"
    else
        echo "$((total / 2)) 50% of RAM, image size unknown"
    fi
}

# Print progress every few seconds while the reader process $1 reads the image
# on its fd 0: bytes, percent of $2 (the compressed size), MB/s; $3: what it is doing
# (unpacking).
tr_progress_loop() {
    local pid total every t0 pos t doing
    pid=$1
    total=$2
    doing=${3:-unpacking}
    every=${TR_PROGRESS_EVERY:-3}
    t0=$(cut -d. -f1 /proc/uptime)
    while kill -0 "$pid" 2> /dev/null; do
        # A background sleep, so that the kill at the end of the unpack stops us at once.
        sleep "$every" > /dev/null 2>&1 &
        wait $!
        pos=$(sed -n 's/^pos:[[:space:]]*//p' "/proc/$pid/fdinfo/0" 2> /dev/null)
        [ -n "$pos" ] || continue
        t=$(($(cut -d. -f1 /proc/uptime) - t0))
        [ "$t" -gt 0 ] || t=1
        tr_say "$doing: $(tr_human "$pos") of $(tr_human "$total") read" \
            "($((pos * 100 / (total + 1)))%), $((pos / t / 1048576)) MB/s"
    done
}

# Unpack archive $1 of format $2 into directory $3. With $4, the expected sha256, nothing of it
# is unpacked before it is verified (_tr_verify_stream; a sharded image part by part).
# Fails with a one-line reason in $TR_RUN/why.
tr_unpack() {
    local file fmt dest sha decomp taropts reader progress limit name
    file=$1
    fmt=$2
    dest=$3
    sha=$4
    name=${file##*/}
    decomp=$(tr_decompressor "$fmt") || return 1
    command -v "${decomp%% *}" > /dev/null || {
        echo "no ${decomp%% *} in the initramfs for this $fmt image" > "$TR_RUN/why"
        return 1
    }
    # What this tar can do, read once: every option below is chosen from it.
    _tr_tarhelp=$(tar --help 2> /dev/null)
    taropts=$(_tr_taropts)
    _tr_checkpoint=no
    _tr_tar_has --checkpoint-action && _tr_checkpoint=yes
    if _tr_is_url "$file"; then
        # The first bytes, the size and range support, in one small request.
        tr_http_probe "$file" || return 1
    fi
    if [ "$fmt" = sharded ]; then
        _tr_unpack_sharded "$file" "$dest" "$sha" "$taropts"
        return
    fi
    if [ -n "$sha" ]; then
        # The bytes to unpack: the file's, or a copy of a server's that was hashed.
        file=$(_tr_verify_stream "$file" "$sha") || return
    fi
    rm -f "$TR_RUN/data" "$TR_RUN"/st.*
    mkfifo "$TR_RUN/data" || return 1
    if _tr_is_url "$file"; then
        # Streamed: download, decompress and tar at once; nothing is stored on the way.
        { _tr_curl "$file" > "$TR_RUN/data" 2> "$TR_RUN/curl.err"; echo $? > "$TR_RUN/st.fetch"; } &
        reader=$!
        _tr_progress_written "$dest" "$(_tr_size "$file")" "" &
        progress=$!
    else
        # The reader has the image on its fd 0, so its position is the progress.
        cat < "$file" > "$TR_RUN/data" &
        reader=$!
        tr_progress_loop "$reader" "$(wc -c < "$file")" &
        progress=$!
    fi
    # tar reads no further than the size the archive records, when it records one (the
    # trailer of our images, xz's index, a plain tar's own size), as for a sharded image's parts.
    limit=$(tr_uncompressed_size "$file" "$fmt")
    case "$limit" in '' | *[!0-9]*) limit= ;; esac
    # What tar leaves when it stops early (a member it cannot write, with busybox's tar) is
    # drained: the decompressor's status then speaks of the archive alone, not of a pipe
    # tar closed. Up to 1 MiB: an archive goes on no further after its end; more (a bomb of
    # zeros) stops the decompressor, which then fails.
    # shellcheck disable=SC2086
    { cat < "$TR_RUN/data"; echo $? > "$TR_RUN/st.read"; } \
        | { $decomp; echo $? > "$TR_RUN/st.decomp"; } \
        | {
            if [ -n "$limit" ]; then
                _tr_tar_capped "$dest" "$taropts" "$limit" "$TR_RUN/tar.err" "$TR_RUN/st.over"
            else
                tar -C "$dest" $taropts -f - 2> "$TR_RUN/tar.err"
            fi
            echo $? > "$TR_RUN/st.tar"
            _tr_drain 1048576 "$TR_RUN/st.trailing"
        }
    wait "$reader"
    kill "$progress" 2> /dev/null
    wait "$progress" 2> /dev/null
    [ "$file" = "$TR_RUN/image.buf" ] && rm -f "$file"
    # The server first: a transfer cut short leaves the decompressor a truncated stream.
    if [ -e "$TR_RUN/st.fetch" ] && [ "$(cat "$TR_RUN/st.fetch")" != 0 ]; then
        echo "cannot fetch $file: $(_tr_curl_why "$TR_RUN/curl.err")" > "$TR_RUN/why"
        return 4
    fi
    if [ -e "$TR_RUN/st.over" ]; then
        echo "$name holds more than the $limit bytes of tar it records (a damaged or changed archive)" > "$TR_RUN/why"
        return 1
    fi
    # A full tmpfs first: tar stops, and the decompressor then fails on the broken pipe
    # (SIGPIPE, or an error exit), which must not be blamed on the archive.
    if [ "$(cat "$TR_RUN/st.tar")" != 0 ] && grep -q "No space left" "$TR_RUN/tar.err"; then
        _tr_full "$dest" > "$TR_RUN/why"
        return 1
    fi
    if [ "$(cat "$TR_RUN/st.decomp")" != 0 ]; then
        echo "$name is not a valid $fmt archive (${decomp%% *} failed)" > "$TR_RUN/why"
        return 1
    fi
    if [ "$(cat "$TR_RUN/st.tar")" != 0 ]; then
        echo "tar failed: $(_tr_tar_error "$TR_RUN/tar.err")" > "$TR_RUN/why"
        return 1
    fi
    tr_say "unpacked $(tr_human "$(_tr_size "$file")") ($fmt) into $(tr_human "$(_tr_fs_used "$dest")")"
    return 0
}

# A pinned single-stream image $1 checked against sha256 $2 before any of it is unpacked;
# prints what to unpack from. A file on a disk is hashed, then unpacked from the same file (the
# second read comes from the page cache; nothing else writes the source while the initramfs
# runs). From a server (HTTP, or NFS: TR_REMOTE_SOURCE=yes), which need not send the same
# bytes twice, the image is first copied whole into $TR_RUN/image.buf, which must have room
# for it, and the copy is what is hashed and unpacked. Fails with the reason in $TR_RUN/why
# (3: the hash, 4: the server).
_tr_verify_stream() {
    local src size room got rest pid progress
    src=$1
    size=$(_tr_size "$1")
    if _tr_is_url "$1" || [ "${TR_REMOTE_SOURCE:-}" = yes ]; then
        room=$(df -k "$TR_RUN" 2> /dev/null | awk 'NR == 2 { printf "%.0f\n", $4 * 1024 - 33554432 }')
        if [ -n "$room" ] && [ "$size" -gt "$room" ]; then
            echo "${1##*/} ($(tr_human "$size")) is verified whole in RAM before it is unpacked, and $TR_RUN has" \
                "$(tr_human $((room > 0 ? room : 0))) to spare (make it sharded, image create's default: verified part by part)" > "$TR_RUN/why"
            return 1
        fi
        src=$TR_RUN/image.buf
        tr_say "copying ${1##*/} ($(tr_human "$size")) into RAM to verify it before unpacking"
        if _tr_is_url "$1"; then
            # No more than the size the server gave is kept: one byte more says it sent more.
            { _tr_curl "$1" 2> "$TR_RUN/curl.err"; echo $? > "$TR_RUN/st.copy"; } | head -c $((size + 1)) > "$src"
            if [ "$(wc -c < "$src" | tr -d ' ')" -gt "$size" ]; then
                rm -f "$src"
                echo "$1: the server sent more than the $size bytes it said the image has" > "$TR_RUN/why"
                return 4
            fi
            if [ "$(cat "$TR_RUN/st.copy")" != 0 ]; then
                rm -f "$src"
                echo "cannot fetch $1: $(_tr_curl_why "$TR_RUN/curl.err")" > "$TR_RUN/why"
                return 4
            fi
        elif ! cat "$1" > "$src" 2> "$TR_RUN/copy.err"; then
            rm -f "$src"
            echo "${1##*/} cannot be read: $(tail -n 1 "$TR_RUN/copy.err")" > "$TR_RUN/why"
            return 1
        fi
    fi
    _tr_sha256 < "$src" > "$TR_RUN/sha256" &
    pid=$!
    tr_progress_loop "$pid" "$size" verifying &
    progress=$!
    wait "$pid"
    kill "$progress" 2> /dev/null
    wait "$progress" 2> /dev/null
    read -r got rest < "$TR_RUN/sha256"
    if [ "$got" != "$(printf '%s' "$2" | tr '[:upper:]' '[:lower:]')" ]; then
        [ "$src" = "$1" ] || rm -f "$src"
        echo "sha256 of the image is $got, not the expected one; nothing of it was unpacked" > "$TR_RUN/why"
        return 3
    fi
    tr_say "sha256 verified, before unpacking"
    echo "$src"
}

# Whether tar's --help (read by tr_unpack into $_tr_tarhelp) names option $1: GNU tar's
# does; busybox's prints nothing on stdout.
_tr_tar_has() {
    case "${_tr_tarhelp:-}" in *"$1"*) return 0 ;; esac
    return 1
}

# tar's options to extract exactly what was packed, as far as this tar can.
_tr_taropts() {
    local opts
    opts="-x -p --numeric-owner"
    if _tr_tar_has --xattrs; then
        opts="$opts --xattrs --xattrs-include=*"
        _tr_tar_has --acls && opts="$opts --acls"
        _tr_tar_has --selinux && opts="$opts --selinux"
    fi
    echo "$opts"
}

# ------------------------------------------------------------- images over HTTP(S)
# root=tmpfs:http://server[:port]/dir or https://...; rd.tmpfs.imgfile is relative to it.
# curl (dracut's url-lib) streams the image into the unpack; nothing is stored whole.

_tr_is_url() {
    case "$1" in http://* | https://*) return 0 ;; esac
    return 1
}

# curl with the retries and limits of the boot: transient failures (refused, timeouts, 5xx)
# retried with backoff for at most rd.retry seconds (TR_HTTP_RETRY_MAX), a transfer slower
# than 1 KB/s for TR_HTTP_SPEED_TIME (30) seconds abandoned; https checked against the CA
# file TR_CAFILE (/etc/tmpfs-root/ca.pem when the initramfs has one) or curl's bundle.
_tr_curl() {
    local ca
    ca=${TR_CAFILE:-/etc/tmpfs-root/ca.pem}
    if [ -r "$ca" ]; then
        set -- --cacert "$ca" "$@"
    fi
    curl -fsS --retry "${TR_HTTP_RETRIES:-8}" --retry-max-time "${TR_HTTP_RETRY_MAX:-180}" --retry-connrefused \
        --connect-timeout "${TR_HTTP_CONNECT_TIMEOUT:-10}" --speed-limit 1024 \
        --speed-time "${TR_HTTP_SPEED_TIME:-30}" "$@"
}

# curl's own words for its failure (the last "curl: (N) ..." line of $1), without the number.
_tr_curl_why() {
    local line why
    why="curl failed"
    while IFS= read -r line; do
        case "$line" in "curl: ("*) why=${line#*) } ;; esac
    done < "$1"
    echo "$why"
}

# Whether the network a URL's host $1 needs is configured: a route on an interface other
# than lo, IPv6 (not link-local or multicast) for a [literal], IPv4 otherwise.
_tr_network_up() {
    case "$1" in
        \[*) awk '$10 != "lo" && $1 !~ /^fe80/ && $1 !~ /^ff/ { up = 1 } END { exit !up }' "${TR_PROC_NET:-/proc/net}/ipv6_route" ;;
        *) awk 'NR > 1 && $1 != "lo" { up = 1 } END { exit !up }' "${TR_PROC_NET:-/proc/net}/route" ;;
    esac 2> /dev/null
}

# Wait up to $2 seconds for the network that URL $1 needs. dracut's shell init brings the
# network up in its initqueue before the pre-mount hooks; with systemd in the initramfs,
# systemd-networkd may still be asking DHCP when they run (nothing orders them after it).
_tr_wait_for_network() {
    local host waited
    host=${1#*://}
    host=${host%%/*}
    waited=0
    _tr_network_up "$host" && return 0
    tr_say "waiting for the network (ip=, rd.neednet=1) to reach $host"
    while [ "$waited" -lt "$2" ]; do
        sleep 1
        waited=$((waited + 1))
        _tr_network_up "$host" && return 0
    done
    return 1
}

# The size in bytes of image $1: a file's, or what the server said in tr_http_probe.
_tr_size() {
    if _tr_is_url "$1"; then cat "$TR_RUN/http.size"; else wc -c < "$1" | tr -d ' '; fi
}

# Ask the server for the first 64 KiB of $1: keeps them in $TR_RUN/http.bin (for the format
# and a sharded image's index), the size in http.size, "yes" in http.ranges when it answers
# range requests (206), and the last bytes in http.tail (the size trailer of image create).
# Fails with the cause in $TR_RUN/why.
tr_http_probe() {
    local rc status total line value
    rm -f "$TR_RUN/http.bin" "$TR_RUN/http.head" "$TR_RUN/http.tail"
    # head keeps 64 KiB even from a server that ignores the range and sends everything.
    { _tr_curl -r 0-65535 -D "$TR_RUN/http.head" "$1" 2> "$TR_RUN/curl.err"; echo $? > "$TR_RUN/st.probe"; } \
        | head -c 65536 > "$TR_RUN/http.bin"
    rc=$(cat "$TR_RUN/st.probe")
    status=
    total=
    # As plan's probe reads them (tui/http_source.py): header names in any case, values
    # without the blanks around them, the last header of a name wins; the size from
    # Content-Range's */N of a 206, or Content-Length of a 200.
    while IFS= read -r line; do
        line=$(printf '%s' "$line" | tr -d '\r')
        case "$line" in
            HTTP/*) status=${line#* } status=${status%% *} total= ;;
            *:*)
                value=${line#*:}
                value=${value#"${value%%[! 	]*}"}
                value=${value%"${value##*[! 	]}"}
                case "$(printf '%s' "${line%%:*}" | tr '[:upper:]' '[:lower:]'):$status" in
                    content-range:206) total=${value##*/} ;;
                    content-length:200) total=$value ;;
                esac
                ;;
        esac
    done < "$TR_RUN/http.head" 2> /dev/null
    if [ ! -s "$TR_RUN/http.bin" ] && [ "$rc" != 0 ]; then
        echo "cannot fetch $1: $(_tr_curl_why "$TR_RUN/curl.err")" > "$TR_RUN/why"
        return 4
    fi
    case "$total" in
        # digits only, at most 15 (shell arithmetic, and no image is a petabyte)
        '' | *[!0-9]* | ????????????????*)
            echo "cannot fetch $1: the server did not say the image's size" > "$TR_RUN/why"
            return 4
            ;;
    esac
    echo "$total" > "$TR_RUN/http.size"
    if [ "$status" = 206 ]; then echo yes; else echo no; fi > "$TR_RUN/http.ranges"
    if [ "$status" = 206 ] && [ "$total" -gt 64 ]; then
        _tr_curl -r "$((total - 64))-" "$1" > "$TR_RUN/http.tail" 2> /dev/null
    fi
    _tr_http_whole_index "$1" "$status" "$total"
}

# The whole index of a sharded image at URL $1 in $TR_RUN/http.bin, when it is longer than the
# first 64 KiB tr_http_probe fetched (an image of more than ~500 shards); $2: the probe's HTTP
# status, $3: the image's size. An index that claims more than an index can hold is left as
# it is: tr_index says it is damaged.
_tr_http_whole_index() {
    local len
    [ "$2" = 206 ] && [ "$(tr_format "$TR_RUN/http.bin")" = sharded ] || return 0
    len=$(od -An -tu1 -j4 -N4 "$TR_RUN/http.bin" | awk 'NF == 4 { printf "%.0f\n", 8 + $1 + $2 * 256 + $3 * 65536 + $4 * 16777216 }')
    [ "$len" -gt 65536 ] && [ "$len" -le 1048584 ] && [ "$len" -le "$3" ] || return 0
    if ! _tr_curl -r "0-$((len - 1))" "$1" 2> "$TR_RUN/curl.err" | head -c "$len" > "$TR_RUN/http.bin"; then
        echo "cannot fetch $1 (its index): $(_tr_curl_why "$TR_RUN/curl.err")" > "$TR_RUN/why"
        return 4
    fi
    return 0
}

# ------------------------------------------------------------- sharded images
# Layout (tui/image_index.py describes it whole): a zstd skippable frame holding a text
# index, then N zstd shards of files and one zstd part of directories, back to back. The
# pinned sha256 is the index frame's; the index holds every part's sha256.

# Check the index of sharded image $1 against the file (of $2 bytes when $1 holds only its
# first bytes, as fetched from a server). Prints "total N" (uncompressed
# bytes), "frame N" (the index frame's length), then one line per part: "kind offset length
# uncompressed entries sha256", the directory part last. On damage: "ERR <reason>", fails.
tr_index() {
    local size len
    size=${2:-$(wc -c < "$1" | tr -d ' ')}
    len=$(od -An -tu1 -j4 -N4 "$1" | awk 'NF == 4 { printf "%.0f\n", $1 + $2 * 256 + $3 * 65536 + $4 * 16777216 }')
    if [ -z "$len" ] || [ "$len" -gt 1048576 ] || [ $((8 + len)) -gt "$size" ]; then
        echo "ERR damaged index (it claims ${len:-no} bytes, the file has $size)"
        return 1
    fi
    # A NUL would end a line early for an awk of C strings (busybox's): made a byte no line may hold.
    head -c $((8 + len)) "$1" | tail -c +9 | tr '\000' '\001' | awk -v size="$size" -v start=$((8 + len)) '
        # Decimal, no leading zero (busybox awk reads 0565 as octal), at most 15 digits.
        function num(s) { return s ~ /^(0|[1-9][0-9]*)$/ && length(s) <= 15 }
        # The line as its fields joined by single spaces: tabs, runs of spaces or spaces at
        # either end make it something else (image_index.read refuses them too).
        function plain(  i, s) { s = $1; for (i = 2; i <= NF; i++) s = s " " $i; return s == $0 }
        # What a damaged line is shown as: printable ASCII only (it goes to the console).
        function shown(s) { s = substr(s, 1, 40); gsub(/[^ -~]/, "?", s); return s }
        NR == 1 { if ($0 != "tmpfs-root-index 1") err = "damaged index (no tmpfs-root-index 1 header)"; next }
        /^$/ || err != "" { next }
        !plain() { err = "damaged index (line \"" shown($0) "\")"; next }
        $1 == "size" && NF == 2 && num($2) && !hs { hs = 1; fsize = $2 + 0; next }
        $1 == "total" && NF == 2 && num($2) && !ht { ht = 1; total = $2 + 0; next }
        $1 == "part" && NF == 7 && ($2 == "files" || $2 == "dirs") && num($3) && num($4) && num($5) && num($6) \
            && $7 ~ /^[0-9a-f]+$/ && length($7) == 64 {
            n++; kind[n] = $2; off[n] = $3 + 0; len[n] = $4 + 0; us[n] = $5 + 0; ent[n] = $6 + 0; sha[n] = $7
            next
        }
        { err = "damaged index (line \"" shown($0) "\")" }
        END {
            bad = "damaged index (it must list 1 to 1023 shards, then the directory part)"
            if (NR == 0) err = "damaged index (empty)"
            if (err == "" && (!hs || !ht)) err = "damaged index (no size or total line)"
            if (err == "" && fsize != size) err = sprintf("truncated or extended: %.0f bytes, the index says %.0f", size, fsize)
            if (err == "" && (n < 2 || n > 1024 || kind[n] != "dirs")) err = bad
            at = start
            for (i = 1; err == "" && i <= n; i++) {
                name = i == n ? "the directory part" : "shard " i " of " n - 1
                if (i < n && kind[i] != "files") err = bad
                else if (off[i] != at) err = sprintf("%s starts at %.0f, expected %.0f (overlapping or misplaced parts)", name, off[i], at)
                else if (len[i] == 0 || off[i] + len[i] > size)
                    err = sprintf("%s points past the end of the file (%.0f+%.0f > %.0f)", name, off[i], len[i], size)
                at = off[i] + len[i]
                sum += us[i]
            }
            if (err == "" && at != size) err = sprintf("the parts end at %.0f, the file at %.0f", at, size)
            if (err == "" && sum != total) err = "damaged index (the sizes of the parts do not add up to its total)"
            if (err != "") { print "ERR " err; exit 1 }
            printf "total %.0f\nframe %.0f\n", total, start
            for (i = 1; i <= n; i++) printf "%s %.0f %.0f %.0f %.0f %s\n", kind[i], off[i], len[i], us[i], ent[i], sha[i]
        }'
}

# How a message names part $1 of $2 parts.
_tr_part_name() {
    if [ "$1" -eq "$2" ]; then echo "the directory part"; else echo "shard $1 of $(($2 - 1))"; fi
}

# The sha256 of stdin, as "HEX ..." on one line: OpenSSL's where the initramfs has it (it
# uses the CPU's SHA extensions: 4x coreutils' speed here), else sha256sum.
_tr_sha256() {
    if command -v openssl > /dev/null 2>&1; then
        openssl dgst -sha256 -r
    else
        sha256sum
    fi
}

# Workers for $1 shards: one per core this process may run on (nproc follows taskset), at
# most one per shard and TR_JOBS_MAX (32); TR_JOBS overrides.
_tr_jobs() {
    local n
    n=${TR_JOBS:-}
    [ -n "$n" ] || n=$(nproc 2> /dev/null)
    [ -n "$n" ] || n=$(grep -c '^processor' /proc/cpuinfo 2> /dev/null)
    case "$n" in '' | *[!0-9]* | 0) n=1 ;; esac
    [ "$n" -gt "${TR_JOBS_MAX:-32}" ] && n=${TR_JOBS_MAX:-32}
    [ "$n" -gt "$1" ] && n=$1
    echo "$n"
}

# Bytes [$2, $2 + $3) of file $1 on stdout: one GNU dd (the initramfs has coreutils'), or
# tail and head where dd lacks byte offsets (busybox); of a URL: one range request.
_tr_read_range() {
    if _tr_is_url "$1"; then
        _tr_curl -r "$2-$(($2 + $3 - 1))" "$1"
        return
    fi
    if [ -z "${_tr_gnu_dd:-}" ]; then
        _tr_gnu_dd=no
        dd --version 2> /dev/null | grep -q coreutils && _tr_gnu_dd=yes
    fi
    if [ "$_tr_gnu_dd" = yes ]; then
        dd if="$1" bs=1048576 iflag=skip_bytes,count_bytes skip="$2" count="$3" status=none
    else
        tail -c +$(($2 + 1)) "$1" | head -c "$3"
    fi
}

# tar -x of stdin into $1 with options $2 (stderr to $4), but never more than $3 bytes of tar;
# past them $5 is made. Some KB of zstd can hold terabytes (of zero blocks that --ignore-zeros
# skips, or of one header again and again), so a part holding more than its index says would
# keep the boot busy for hours otherwise. $6: the record tar reads in (_tr_record; 10240),
# 32 KiB records read as such. $7 non-empty: a shard's tar, which makes no symbolic link (GNU
# tar: every link's target becomes empty, which symlink(2) refuses, so the member fails and
# nothing is made); a link another tar made could otherwise lead this one out of the new root.
_tr_tar_capped() {
    local rec opts xform
    rec=${6:-10240}
    opts=$2
    [ "$rec" = 32768 ] && opts="$opts -b 64 -B"
    xform=
    [ -n "${7:-}" ] && [ "${_tr_nolinks:-}" = transform ] && xform=yes
    if [ "${_tr_checkpoint:-}" = yes ]; then
        # GNU tar counts its records: stopped at the first one past the limit, at no cost before.
        # shellcheck disable=SC2016,SC2086 # $PPID is the checkpoint script's: tar; tar's options
        # LC_ALL=C: under a UTF-8 locale '.' matches no invalid byte, and '.*' would leave
        # the rest of a link's target in place.
        LC_ALL=C TR_OVER=$5 tar -C "$1" $opts ${xform:+"--transform=s,.*,,RH"} --checkpoint=$((($3 + rec - 1) / rec + 1)) \
            --checkpoint-action='exec=: > "$TR_OVER"; kill -TERM $PPID' -f - 2> "$4"
    else
        # Other tars (busybox's, which reads on to the end of its input by itself) are given
        # that many bytes; one more left over once tar took them all means the part holds
        # more (after a failed tar the caller's drain reads on). Their shards' links are
        # looked for once each is in (_tr_unpack_part).
        # shellcheck disable=SC2086
        head -c "$3" | LC_ALL=C tar -C "$1" $opts -f - 2> "$4"
        set -- "$?" "$5"
        [ "$1" = 0 ] || return "$1"
        _tr_drain 0 "$2"
    fi
}

# The record GNU tar reads $1 bytes of a sharded image's tar in (a part, or a run of parts):
# 32 KiB when they are whole 32 KiB records (image create makes every shard of whole 160 KiB
# records), which spares tar two of every three reads from the pipe; else tar's default
# 10 KiB (images made before, the directory part mostly, and busybox's tar, which has no
# records). --totals counts whole records, so the size is checked exactly against the index
# only when read in a record that divides it.
_tr_record() {
    if [ $(($1 % 32768)) = 0 ] && _tr_tar_has --blocking-factor; then
        echo 32768
    else
        echo 10240
    fi
}

# Read what a tar left of its input (the end-of-archive padding, or all the rest when it
# stopped early, so that the decompressor's status speaks of the data alone and a hash sees
# every byte), but at most $1 bytes: past them $2 is made, and the rest is left unread.
_tr_drain() {
    head -c "$1" > /dev/null
    case $(head -c 1 | wc -c) in *1*) : > "$2" ;; esac
}

# Unpack one part of sharded image $1 into $2: its bytes (read exactly: dd, or one range
# request), zstd, tar. With a pinned sha256 ($3) nothing of it reaches zstd before it is
# verified: _tr_fetch_verified reads it whole into a buffer and checks it against the index,
# and the buffer is what is unpacked. $4: tar's options; $5: the part's number, $6: how many
# parts there are; $7-$12: its index line (kind offset length uncompressed entries sha256). A
# shard (kind "files") may hold no symbolic link: its tar is told to make none
# (_tr_tar_capped), or, with a tar that cannot be told so, the new root is searched for one
# once the shard is in (the parts then go one at a time). Fails with "<rc> <reason>" in
# $TR_RUN/shard/<n>.why.
_tr_unpack_part() {
    local st got read tarst rec opts want src at nolinks
    st=$TR_RUN/shard/$5
    rec=$(_tr_record "${10}")
    opts=$4
    want=${10}
    if _tr_tar_has --ignore-zeros; then
        # Every member of the part, past end-of-archive blocks too, as `image inspect` reads
        # it; GNU tar then counts one more record.
        opts="$opts --ignore-zeros"
        want=$((${10} + rec))
    fi
    nolinks=
    [ "$7" = files ] && nolinks=yes
    src=$1
    at=$8
    if [ -n "$3" ]; then
        _tr_fetch_verified "$1" "$5" || return
        src=$st.buf
        at=0
    fi
    # shellcheck disable=SC2086
    { _tr_read_range "$src" "$at" "$9" 2> "$st.dd"; echo $? > "$st.read"; } \
        | { zstd -dcq; echo $? > "$st.decomp"; } \
        | {
            _tr_tar_capped "$2" "$opts" "$want" "$st.tar.err" "$st.over" "$rec" "$nolinks"
            echo $? > "$st.tar"
            _tr_drain "$want" "$st.over"
        }
    rm -f "$st.buf"
    _tr_part_over "$@" || return
    read -r tarst < "$st.tar"
    # GNU tar counts what it read (--totals); the index must say the same.
    read=$(_tr_tar_said "$st.tar.err" "$tarst" "$2" "$st.why") || return 1
    _tr_part_read "$@" || return
    read -r got < "$st.decomp"
    if [ "$got" != 0 ]; then
        echo "1 $(_tr_part_name "$5" "$6") of ${1##*/} is damaged (zstd failed)" > "$st.why"
        return 1
    fi
    if [ "$tarst" != 0 ]; then
        _tr_tar_failed "$(_tr_part_name "$5" "$6")" "$st.tar.err" > "$st.why"
        return 1
    fi
    if [ -n "$read" ] && [ "$read" != "$want" ]; then
        echo "1 $(_tr_part_name "$5" "$6") holds $((read + ${10} - want)) bytes of tar, its index says ${10} (a damaged index)" > "$st.why"
        return 1
    fi
    if [ -n "$nolinks" ] && [ "${_tr_nolinks:-}" = scan ]; then
        _tr_no_link_in "$2" "$(_tr_part_name "$5" "$6")" > "$st.why" || return 1
        rm -f "$st.why"
    fi
    : > "$st.done"
}

# Part $2 of image $1 (its index line is line $2 of $TR_RUN/parts) read whole into
# $TR_RUN/shard/$2.buf and checked against the sha256 the index gives it. What is unpacked is
# then the buffer: the very bytes that were hashed, whatever the source would answer to a
# second read (an NFS or HTTP server need not answer the same twice). Fails with
# "<rc> <reason>" in $TR_RUN/shard/$2.why, the buffer removed.
_tr_fetch_verified() {
    local buf got rest name
    name=$(_tr_part_name "$2" "$(grep -c '' "$TR_RUN/parts")")
    # shellcheck disable=SC2046 # the part's index fields: $3 kind $4 offset $5 length ... $8 sha256
    set -- "$1" "$2" $(sed -n "${2}p" "$TR_RUN/parts")
    buf=$TR_RUN/shard/$2.buf
    # No more than asked is kept, whatever a server sends: one byte more says it sent more.
    { _tr_read_range "$1" "$4" "$5" 2> "$TR_RUN/shard/$2.dd"; echo $? > "$TR_RUN/shard/$2.read"; } \
        | head -c $(($5 + 1)) > "$buf"
    read -r got < "$TR_RUN/shard/$2.read"
    if [ "$(wc -c < "$buf" | tr -d ' ')" -gt "$5" ]; then
        rm -f "$buf"
        echo "4 $1 ($name): the server sent more than the $5 bytes asked for" > "$TR_RUN/shard/$2.why"
        return 4
    fi
    if [ "$got" != 0 ] || [ "$(wc -c < "$buf" | tr -d ' ')" != "$5" ]; then
        rm -f "$buf"
        if _tr_is_url "$1"; then
            echo "4 cannot fetch $1 ($name): $(_tr_curl_why "$TR_RUN/shard/$2.dd")" > "$TR_RUN/shard/$2.why"
            return 4
        fi
        echo "1 $name cannot be read: $(tail -n 1 "$TR_RUN/shard/$2.dd")" > "$TR_RUN/shard/$2.why"
        return 1
    fi
    _tr_sha256 < "$buf" > "$TR_RUN/shard/$2.sha"
    read -r got rest < "$TR_RUN/shard/$2.sha"
    if [ "$got" != "$8" ]; then
        rm -f "$buf"
        echo "3 $name: its sha256 is not the one in the image's index (the image was changed); nothing of it was unpacked" \
            > "$TR_RUN/shard/$2.why"
        return 3
    fi
    return 0
}

# Shards $2 to $3 of image $1 on stdout, each one only once _tr_fetch_verified has checked it;
# the next one is fetched and checked while this one is unpacked (two buffers at most). Stops
# at the first one that fails (its .why says why) or when the pipeline stops taking bytes.
_tr_emit_verified() {
    local i next
    i=$2
    _tr_fetch_verified "$1" "$i" || return 0
    while :; do
        next=
        if [ "$i" -lt "$3" ]; then
            _tr_fetch_verified "$1" $((i + 1)) &
            next=$!
        fi
        if ! cat "$TR_RUN/shard/$i.buf"; then
            # zstd gave up: what it said is the cause; the next buffer is not needed.
            rm -f "$TR_RUN/shard/$i.buf"
            [ -n "$next" ] && wait "$next"
            rm -f "$TR_RUN/shard/$((i + 1)).buf"
            return 0
        fi
        rm -f "$TR_RUN/shard/$i.buf"
        [ -n "$next" ] || return 0
        wait "$next" || return 0
        i=$((i + 1))
    done
}

# The line for a part's tar that failed ($1: how to name the part, $2: tar's stderr): a
# symbolic link in a shard (its tar was told to make none) is said as such.
_tr_tar_failed() {
    local link
    link=$(sed -n 's/^[^:]*tar: \(.*\): Cannot create symlink to .*/\1/p' "$2" | head -n 1 | _tr_cut 120)
    if [ -n "$link" ]; then
        echo "1 $1 holds a symbolic link ($link); only the image's last part may (a changed or hostile image)"
    else
        echo "1 $1: tar failed: $(_tr_tar_error "$2")"
    fi
}

# Whether the new root $1 holds no symbolic link after shard $2 (no other tar runs then):
# searched from inside it, so that every name a tar made there is in reach (one longer than
# PATH_MAX from / is not), and any error of the search is a refusal, never a pass. Prints
# the line for the first link and fails.
_tr_no_link_in() {
    local link
    link=$(cd "$1" && find . -type l 2> "$TR_RUN/find.err" | head -n 1 | _tr_cut 120)
    if [ -s "$TR_RUN/find.err" ]; then
        echo "1 the new root cannot be searched for links after $2: $(head -n 1 "$TR_RUN/find.err" | _tr_cut 200)"
        return 1
    fi
    [ -z "$link" ] && return 0
    echo "1 $2 holds a symbolic link (${link#./}); only the image's last part may (a changed or hostile image)"
    return 1
}

# Whether the part (arguments as _tr_unpack_part's) held no more tar than its index says;
# said first, as what follows from a cut-off stream (a short hash, a broken pipe) is not the cause.
_tr_part_over() {
    [ -e "$TR_RUN/shard/$5.over" ] || return 0
    echo "1 $(_tr_part_name "$5" "$6"): more than the ${10} bytes of tar its index says (a damaged index, or a changed shard)" \
        > "$TR_RUN/shard/$5.why"
    return 1
}

# What a part's tar said in $1 (its stderr; $2: its exit status): prints the bytes it read
# (--totals), or, when it ran out of room in the tmpfs $3, writes "1 the tmpfs is full..."
# to $4 and fails.
_tr_tar_said() {
    local line read
    read=
    while read -r line; do
        case "$line" in
            "Total bytes read: "*)
                read=${line#Total bytes read: }
                read=${read%% *}
                ;;
            *"No space left"*)
                [ "$2" = 0 ] && continue
                echo "1 $(_tr_full "$3")" > "$4"
                return 1
                ;;
        esac
    done < "$1"
    echo "$read"
}

# The first thing tar said in $1 (its stderr) about what went wrong: not its byte count
# (--totals) nor its closing words ("Exiting with failure status due to previous errors").
_tr_tar_error() {
    grep -v -e '^$' -e '^Total bytes read' -e 'Exiting with failure status' -e 'Error is not recoverable' "$1" \
        | head -n 1
}

# Whether the bytes of the part (arguments as _tr_unpack_part's) were read whole: a short
# read, or a transfer cut short, is said as such before what follows from it (a hash that
# differs, a truncated zstd frame).
_tr_part_read() {
    local got
    read -r got < "$TR_RUN/shard/$5.read"
    [ "$got" = 0 ] && return 0
    if _tr_is_url "$1"; then
        echo "4 cannot fetch $1 ($(_tr_part_name "$5" "$6")): $(_tr_curl_why "$TR_RUN/shard/$5.dd")" > "$TR_RUN/shard/$5.why"
        return 4
    fi
    echo "1 $(_tr_part_name "$5" "$6") cannot be read: $(tail -n 1 "$TR_RUN/shard/$5.dd")" > "$TR_RUN/shard/$5.why"
    return 1
}

# The shards split into $1 runs of consecutive shards, balanced by uncompressed bytes: one
# line per run, "first last offset length uncompressed" (offset and length of its bytes).
_tr_runs() {
    awk -v w="$1" '
        function emit(a, b, j, u) {
            u = 0
            for (j = a; j <= b; j++) u += us[j]
            printf "%d %d %.0f %.0f %.0f\n", a, b, off[a], off[b] + len[b] - off[a], u
        }
        $1 == "files" { n++; off[n] = $2; len[n] = $3; us[n] = $4; tot += $4 }
        END {
            start = 1; acc = 0; k = 1
            for (i = 1; i <= n; i++) {
                acc += us[i]
                if (k < w && i < n && acc >= tot * k / w) { emit(start, i); start = i + 1; k++ }
            }
            if (start <= n) emit(start, n)
        }' "$TR_RUN/parts"
}

# Unpack shards $5 to $6 of sharded image $1 into $2 in one pipeline: their bytes ($7 from
# offset $8... as _tr_runs prints) through one zstd into one tar ($3: its options, with
# --ignore-zeros) that makes no symbolic link; $4: the number of parts; ${10}: the pinned
# sha256, when there is one (each shard then goes into the pipeline only once it is verified:
# _tr_emit_verified). A failure is said for the one shard at fault.
_tr_unpack_run() {
    local st got i name read tarst rec
    st=$TR_RUN/shard/run.$5
    rec=$(_tr_record "$9")
    # shellcheck disable=SC2086 # tar's options
    {
        if [ -n "${10}" ]; then
            _tr_emit_verified "$1" "$5" "$6"
        else
            _tr_read_range "$1" "$7" "$8" 2> "$st.dd"
        fi
        echo $? > "$st.read"
    } \
        | { zstd -dcq; echo $? > "$st.decomp"; } \
        | {
            _tr_tar_capped "$2" "$3" $(($9 + rec)) "$st.tar.err" "$st.over" "$rec" nolinks
            echo $? > "$st.tar"
            _tr_drain $(($9 + rec)) "$st.over"
        }
    name="shards $5 to $6 of $(($4 - 1))"
    [ "$5" = "$6" ] && name=$(_tr_part_name "$5" "$4")
    # First: what follows from a cut-off stream (a short count, a broken pipe) is not the cause.
    if [ -e "$st.over" ]; then
        echo "1 $name: more than the $9 bytes of tar the index says (a damaged index, or changed shards)" > "$TR_RUN/shard/$5.why"
        return 1
    fi
    # A shard that failed its check (nothing of it went in, nor of any after it).
    i=$5
    while [ "$i" -le "$6" ]; do
        if [ -e "$TR_RUN/shard/$i.why" ]; then
            read -r got < "$TR_RUN/shard/$i.why"
            return "${got%% *}"
        fi
        i=$((i + 1))
    done
    read -r tarst < "$st.tar"
    read=$(_tr_tar_said "$st.tar.err" "$tarst" "$2" "$TR_RUN/shard/$5.why") || return 1
    read -r got < "$st.read"
    if [ "$got" != 0 ]; then
        if _tr_is_url "$1"; then
            echo "4 cannot fetch $1 ($name): $(_tr_curl_why "$st.dd")" > "$TR_RUN/shard/$5.why"
            return 4
        fi
        echo "1 $name cannot be read: $(tail -n 1 "$st.dd")" > "$TR_RUN/shard/$5.why"
        return 1
    fi
    read -r got < "$st.decomp"
    if [ "$got" != 0 ]; then
        # Which shard: each one of the run on its own through zstd's test.
        i=$5
        while [ "$i" -le "$6" ]; do
            # shellcheck disable=SC2046 # the shard's index fields
            set -- "$1" "$2" "$3" "$4" "$5" "$6" $(sed -n "${i}p" "$TR_RUN/parts")
            if ! _tr_read_range "$1" "$8" "$9" 2> /dev/null | zstd -tq 2> /dev/null; then
                echo "1 $(_tr_part_name "$i" "$4") of ${1##*/} is damaged (zstd failed)" > "$TR_RUN/shard/$5.why"
                return 1
            fi
            i=$((i + 1))
        done
        echo "1 $name of ${1##*/} is damaged (zstd failed)" > "$TR_RUN/shard/$5.why"
        return 1
    fi
    if [ "$tarst" != 0 ]; then
        _tr_tar_failed "$name" "$st.tar.err" > "$TR_RUN/shard/$5.why"
        return 1
    fi
    # Told to read on past end-of-archive blocks, GNU tar counts one more record.
    if [ -n "$read" ] && [ "$read" != $(($9 + rec)) ]; then
        echo "1 $name: $((read - rec)) bytes of tar, the index says $9 (a damaged index)" > "$TR_RUN/shard/$5.why"
        return 1
    fi
    i=$5
    while [ "$i" -le "$6" ]; do
        : > "$TR_RUN/shard/$i.done"
        i=$((i + 1))
    done
}

# One worker: go through the parts (the directory part, last, aside), claim each one nobody
# has taken (a file created with noclobber: atomic) and unpack it; stop at the first failure
# anywhere. $1-$4 as for _tr_unpack_part, $5: the number of parts.
_tr_shard_worker() {
    local n line
    n=0
    while read -r line; do
        n=$((n + 1))
        [ "$n" -lt "$5" ] || break
        [ -e "$TR_RUN/shard/abort" ] && break
        (set -C && : > "$TR_RUN/shard/$n.claim") 2> /dev/null || continue
        # shellcheck disable=SC2086 # the line's six fields
        _tr_unpack_part "$1" "$2" "$3" "$4" "$n" "$5" $line || { : > "$TR_RUN/shard/abort"; } 2> /dev/null
    done < "$TR_RUN/parts"
}

# Progress every few seconds from what the tmpfs $1 holds: bytes of $2 written, and shards
# done of $3 when it is given (a sharded image), or MB/s alone (a stream from a server).
_tr_progress_written() {
    local dest total count every t0 used t finished
    dest=$1
    total=$2
    count=$3
    every=${TR_PROGRESS_EVERY:-3}
    t0=$(cut -d. -f1 /proc/uptime)
    while :; do
        sleep "$every" > /dev/null 2>&1 &
        wait $!
        used=$(_tr_fs_used "$dest")
        used=${used:-0}
        t=$(($(cut -d. -f1 /proc/uptime) - t0))
        [ "$t" -gt 0 ] || t=1
        if [ -n "$count" ]; then
            set -- "$TR_RUN"/shard/*.done
            finished=$#
            [ -e "$1" ] || finished=0
            tr_say "unpacking: $(tr_human "$used") of $(tr_human "$total") written ($((used * 100 / (total + 1)))%)," \
                "$((used / t / 1048576)) MB/s, $finished of $count shards in"
        else
            tr_say "unpacking: $(tr_human "$used") written, $((used / t / 1048576)) MB/s"
        fi
    done
}

# Unpack sharded image $1 into $2 (sha256 $3 pinned, or empty), with tar options $4: the
# index is checked (and, when pinned, hashed) before anything is written; the shards go in
# parallel, each verified before any of it is unpacked when pinned, then the directory part,
# only once every shard is in. No shard's tar can make a symbolic link, so none can lead
# another out of the new root: the links come with the directory part, alone, whose GNU tar
# makes every link that could lead out only at its very end. Fails with the reason in
# $TR_RUN/why (3: a hash).
_tr_unpack_sharded() {
    local file dest sha taropts count jobs total frame got w pids progress n why head line
    file=$1
    dest=$2
    sha=$(printf '%s' "$3" | tr '[:upper:]' '[:lower:]')
    taropts=$4
    _tr_tar_has --totals && taropts="$taropts --totals"
    if _tr_is_url "$file"; then
        if [ "$(cat "$TR_RUN/http.ranges")" != yes ]; then
            echo "$file: the server does not answer range requests, which a sharded image needs" \
                "(serve it with one that does, or make the image with --shards 1)" > "$TR_RUN/why"
            return 4
        fi
        head=$TR_RUN/http.bin
    else
        # The index is read once, into RAM: what is parsed is what is hashed, whatever the
        # source (an NFS server) would answer to a second read.
        head=$TR_RUN/index.bin
        head -c 1048584 "$file" > "$head" || return 1
    fi
    if ! tr_index "$head" "$(_tr_size "$file")" > "$TR_RUN/index"; then
        echo "${file##*/}: $(sed -n 's/^ERR //p' "$TR_RUN/index")" > "$TR_RUN/why"
        return 1
    fi
    total=$(sed -n 's/^total //p' "$TR_RUN/index")
    frame=$(sed -n 's/^frame //p' "$TR_RUN/index")
    grep -e '^files ' -e '^dirs ' "$TR_RUN/index" > "$TR_RUN/parts"
    count=$(grep -c '' "$TR_RUN/parts")
    if [ -n "$sha" ]; then
        got=$(head -c "$frame" "$head" | _tr_sha256 | cut -d' ' -f1)
        if [ "$got" != "$sha" ]; then
            echo "sha256 of the image (its index) is $got, not the expected one" > "$TR_RUN/why"
            return 3
        fi
    fi
    # How no shard makes a symbolic link: GNU tar is told so (and runs shards side by side);
    # another tar is followed by a search of the new root, one shard at a time.
    if _tr_tar_has --ignore-zeros && _tr_tar_has --transform && [ "${_tr_checkpoint:-}" = yes ]; then
        _tr_nolinks=transform
    elif command -v find > /dev/null; then
        _tr_nolinks=scan
    else
        echo "this initramfs can unpack no sharded image safely: its tar cannot be told to make no" \
            "symbolic link and it has no find (install GNU tar, or make the image with --shards 1)" > "$TR_RUN/why"
        return 1
    fi
    rm -rf "$TR_RUN/shard"
    mkdir -p "$TR_RUN/shard" || return 1
    jobs=$(_tr_jobs $((count - 1)))
    [ "$_tr_nolinks" = scan ] && jobs=1
    if [ -n "$sha" ]; then
        jobs=$(_tr_buffer_jobs "$jobs" "$total") || return 1
    fi
    _tr_progress_written "$dest" "$total" $((count - 1)) &
    progress=$!
    # Decided once, here: the workers' subshells inherit it.
    _tr_gnu_dd=no
    dd --version 2> /dev/null | grep -q coreutils && _tr_gnu_dd=yes
    pids=
    if [ "$_tr_nolinks" = scan ]; then
        # Part by part, each on its own tar (busybox's stops at the first end-of-archive).
        w=0
        while [ "$w" -lt "$jobs" ]; do
            _tr_shard_worker "$file" "$dest" "$sha" "$taropts" "$count" &
            pids="$pids $!"
            w=$((w + 1))
        done
    else
        # Each worker takes one run of consecutive shards (balanced by their uncompressed
        # bytes) in a single pipeline: one zstd, one tar for many shards; one read (or range
        # request) for them all, or, when pinned, one per shard, each verified first.
        # shellcheck disable=SC2086 # the run's five fields
        while read -r line; do
            _tr_unpack_run "$file" "$dest" "$taropts --ignore-zeros" "$count" $line "$sha" &
            pids="$pids $!"
        done << EOF
$(_tr_runs "$jobs")
EOF
    fi
    # shellcheck disable=SC2086
    wait $pids
    # The directories and links last, and only once every shard is in: their owners, modes,
    # times and xattrs are the final word, and no link exists while another tar runs.
    n=1
    while [ "$n" -lt "$count" ] && [ -e "$TR_RUN/shard/$n.done" ]; do
        n=$((n + 1))
    done
    # And, told or searched, no shard made a link: checked once more before the one part that
    # writes where links are (the search takes some 20 ms for 20,000 entries).
    if [ "$n" = "$count" ] && [ "$_tr_nolinks" = transform ] && command -v find > /dev/null \
        && ! _tr_no_link_in "$dest" "the shards" > "$TR_RUN/shard/$count.why"; then
        n=0
    fi
    if [ "$n" = "$count" ]; then
        rm -f "$TR_RUN/shard/$count.why"
        # shellcheck disable=SC2046 # the last line's six fields
        _tr_unpack_part "$file" "$dest" "$sha" "$taropts" "$count" "$count" $(tail -n 1 "$TR_RUN/parts")
    fi
    kill "$progress" 2> /dev/null
    wait "$progress" 2> /dev/null
    n=1
    while [ "$n" -le "$count" ]; do
        if [ -e "$TR_RUN/shard/$n.why" ]; then
            why=$(cat "$TR_RUN/shard/$n.why")
            echo "${why#* }" > "$TR_RUN/why"
            return "${why%% *}"
        fi
        n=$((n + 1))
    done
    if [ ! -e "$TR_RUN/shard/$count.done" ]; then
        echo "unpacking ${file##*/} failed" > "$TR_RUN/why"
        return 1
    fi
    tr_say "unpacked $(tr_human "$(_tr_size "$file")") (sharded: $((count - 1)) shards, $jobs workers)" \
        "into $(tr_human "$(_tr_fs_used "$dest")")"
    [ -n "$sha" ] && tr_say "sha256 verified: the index and every shard, each before it was unpacked"
    return 0
}

# How many of $1 workers can each hold two parts of the pinned image in $TR_RUN (a part is
# verified whole before it is unpacked, the next one fetched while it is): the room left
# there, and in RAM beside the $2 bytes the tree will take, less 32 MiB, over twice the
# biggest part. Fails with the reason in $TR_RUN/why when not even one worker can (one line
# naming the part and the numbers).
_tr_buffer_jobs() {
    local big room ram fit
    big=$(awk '$3 > big { big = $3 } END { printf "%.0f\n", big }' "$TR_RUN/parts")
    room=$(df -k "$TR_RUN" 2> /dev/null | awk 'NR == 2 { printf "%.0f\n", $4 * 1024 }')
    case "$room" in '' | *[!0-9]*) room=$(tr_meminfo MemAvailable) ;; esac
    # /run is a tmpfs too: its size is a limit, not RAM set aside.
    ram=$(($(tr_meminfo MemAvailable) - $2))
    [ "$ram" -lt "$room" ] && room=$ram
    room=$((room - 33554432))
    fit=$((room / (2 * big + 1)))
    if [ "$fit" -ge 1 ]; then
        [ "$fit" -lt "$1" ] && set -- "$fit"
        echo "$1"
        return 0
    fi
    echo "a part of $(tr_human "$big") is verified in RAM before it is unpacked, and there is" \
        "$(tr_human $((room > 0 ? room : 0))) to spare for two beside the tree (make the image with more shards)" > "$TR_RUN/why"
    return 1
}

# Why tar found no room in the tmpfs $1: its inodes all taken (a low nr_inodes= in
# rd.tmpfs.opts; more size would not help), or its bytes.
_tr_full() {
    local inodes
    inodes=$(df -i "$1" 2> /dev/null | awk 'NR == 2 && $2 > 0 && $4 == 0 { print $2 }')
    if [ -n "$inodes" ]; then
        echo "the tmpfs ran out of inodes: the image holds more files than the $inodes it allows (nr_inodes=)"
        return
    fi
    echo "the tmpfs is full: the image does not fit in $(tr_human "$(_tr_fs_size "$1")")"
}

_tr_fs_used() {
    df -k "$1" 2> /dev/null | awk 'NR == 2 { printf "%.0f\n", $3 * 1024 }'
}

_tr_fs_size() {
    df -k "$1" 2> /dev/null | awk 'NR == 2 { printf "%.0f\n", $2 * 1024 }'
}

# ------------------------------------------------------------ filling the root
# Mount the source read-only, mount a tmpfs on $NEWROOT, unpack the image into it,
# unmount the source (the pre-mount hook calls it). Every failure goes through tr_fail:
# one line naming the cause and the parameter to fix, then dracut's failure path.

tr_cleanup() {
    if ismounted "$TR_SRC_MNT" 2> /dev/null || grep -q " $TR_SRC_MNT " /proc/mounts 2> /dev/null; then
        umount "$TR_SRC_MNT" 2> /dev/null || umount -l "$TR_SRC_MNT" 2> /dev/null
    fi
    if [ "$1" = all ] && grep -q "^tmpfs $NEWROOT " /proc/mounts 2> /dev/null; then
        umount "$NEWROOT" 2> /dev/null || umount -l "$NEWROOT" 2> /dev/null
    fi
    return 0
}

# $1: what went wrong, $2: the kernel parameter to fix.
tr_fail() {
    set -- "$(_tr_printable "$1")" "$2"
    tr_say "$1 ($2)"
    tr_cleanup all
    echo "tmpfs-root: $1 ($2)" > "$TR_RUN/failed"
    emergency_shell -n tmpfs-root "tmpfs-root: $1 ($2)"
    return 1
}

tr_fill_root() {
    local src img size sha opts nfslib netif did dev file fmt usize choice bytes avail rc why bad csize TR_REMOTE_SOURCE
    src=$(tr_source) || return 0
    img=$(getarg rd.tmpfs.imgfile=)
    size=$(getarg rd.tmpfs.size=)
    sha=$(getarg rd.tmpfs.sha256=)
    opts=$(getarg rd.tmpfs.opts=)
    mkdir -p "$TR_RUN" "$TR_SRC_MNT"
    # root's alone: it is carried into the booted system, where tmpfs-root takes its lock in it
    chmod 0700 "$TR_RUN"
    getarg rd.retry= > /dev/null && TR_HTTP_RETRY_MAX=$(getarg rd.retry=)

    [ -n "$img" ] || { tr_fail "no image given; accepted: a path on $src, e.g. images/rootfs.tar.zst" rd.tmpfs.imgfile; return 1; }
    case "/$img/" in
        //* | */../*) tr_fail "'$img' must be a relative path without '..'" rd.tmpfs.imgfile; return 1 ;;
    esac
    if [ -n "$size" ] && ! tr_size_bytes "$size" > /dev/null; then
        tr_fail "'$size' is not a tmpfs size; accepted: N, N[kmgtpe] or N%" rd.tmpfs.size
        return 1
    fi
    case "$sha" in
        '') ;;
        *[!0-9a-fA-F]*) tr_fail "'$sha' is not a sha256; accepted: 64 hex digits" rd.tmpfs.sha256; return 1 ;;
        *) [ ${#sha} -eq 64 ] || { tr_fail "'$sha' is not a sha256; accepted: 64 hex digits" rd.tmpfs.sha256; return 1; } ;;
    esac
    if [ -n "$opts" ] && ! bad=$(tr_check_opts "$opts"); then
        if [ "$bad" = huge=always ]; then
            tr_fail "tmpfs option huge=always not accepted: every file of the root would take a 2 MiB page of RAM; accepted: huge=within_size, huge=advise, huge=never" rd.tmpfs.opts
            return 1
        fi
        tr_fail "tmpfs option '$bad' not accepted; accepted: mpol=, nr_inodes=, huge=within_size|advise|never" rd.tmpfs.opts
        return 1
    fi

    case "$src" in
        http://* | https://*)
            file="${src%/}/$img"
            if [ -z "$sha" ] && [ "${src%%:*}" = http ] && ! getargbool 0 rd.tmpfs.insecure; then
                tr_fail "over plain http the image must be pinned: rd.tmpfs.sha256=<hex> (or rd.tmpfs.insecure=1 to boot whatever the network sends)" rd.tmpfs.sha256
                return 1
            fi
            command -v curl > /dev/null || { tr_fail "no curl in this initramfs (add dracut's url-lib module)" root=; return 1; }
            _tr_wait_for_network "$src" "${TR_HTTP_RETRY_MAX:-180}" \
                || tr_say "no network route after ${TR_HTTP_RETRY_MAX:-180} s (rd.retry); trying anyway"
            if ! tr_http_probe "$file"; then
                tr_fail "$(cat "$TR_RUN/why")" root=
                return 1
            fi
            ;;
        NFS=*)
            nfslib=${TR_NFS_LIB:-/lib/nfs-lib.sh}
            [ -e "$nfslib" ] || { tr_fail "no NFS support in this initramfs (add dracut's nfs module)" root=; return 1; }
            # shellcheck source=/dev/null # dracut's nfs module, in the initramfs
            . "$nfslib"
            netif=
            for did in /tmp/net.*.did-setup; do
                [ -e "$did" ] || continue
                netif=${did#/tmp/net.}
                netif=${netif%.did-setup}
                break
            done
            # A server may answer a second read differently: a pinned image is verified in RAM.
            TR_REMOTE_SOURCE=yes
            if ! mount_nfs "${src#NFS=}" "$TR_SRC_MNT" "$netif"; then
                tr_fail "cannot mount the NFS export ${src#NFS=}" root=
                return 1
            fi
            # mount_nfs mounts read-write when the kernel command line says rw: not the source.
            # -i: the kernel remounts it; mount.nfs would need /etc/protocols, not in the initramfs.
            if ! mount -i -o remount,ro "$TR_SRC_MNT" 2> "$TR_RUN/mount.err"; then
                tr_fail "cannot make the NFS export ${src#NFS=} read-only: $(tail -n 1 "$TR_RUN/mount.err")" root=
                return 1
            fi
            ;;
        *)
            dev=$(tr_source_dev "$src")
            if [ ! -b "$dev" ]; then
                tr_fail "source $src not found ($dev missing)" root=
                return 1
            fi
            if ! mount -o ro "$dev" "$TR_SRC_MNT" 2> "$TR_RUN/mount.err"; then
                tr_fail "cannot mount $src read-only: $(tail -n 1 "$TR_RUN/mount.err")" root=
                return 1
            fi
            ;;
    esac

    if _tr_is_url "$src"; then
        fmt=$(tr_format "$TR_RUN/http.bin")
    else
        file="$TR_SRC_MNT/$img"
        if [ ! -f "$file" ]; then
            tr_fail "$img not found on $src" rd.tmpfs.imgfile
            return 1
        fi
        fmt=$(tr_format "$file")
    fi
    csize=$(_tr_size "$file")
    if [ "$fmt" = unknown ]; then
        tr_fail "$img is not an archive (by its first bytes); accepted: tar, or tar with gzip, xz, zstd, bzip2, lz4" rd.tmpfs.imgfile
        return 1
    fi

    # RAM-fit check, before anything is unpacked.
    usize=$(tr_uncompressed_size "$file" "$fmt")
    choice=$(tr_choose_size "$size" "$usize")
    bytes=${choice%% *}
    avail=$(tr_meminfo MemAvailable)
    if [ -n "$usize" ] && [ "$usize" -gt "$bytes" ]; then
        tr_fail "tmpfs of $(tr_human "$bytes") is too small for $img ($(tr_human "$usize") uncompressed)" rd.tmpfs.size
        return 1
    fi
    if [ -n "$usize" ] && [ "$usize" -gt "$((avail - 67108864))" ]; then
        tr_fail "$img needs $(tr_human "$usize") of RAM uncompressed, only $(tr_human "$avail") available" rd.tmpfs.imgfile
        return 1
    fi
    if [ "$bytes" -gt "$(tr_meminfo MemTotal)" ]; then
        tr_say "warning: tmpfs size $(tr_human "$bytes") is above RAM ($(tr_human "$(tr_meminfo MemTotal)")); the root can outgrow memory"
    fi
    tr_say "tmpfs of $(tr_human "$bytes") for / (${choice#* }); image $img, $fmt, $(tr_human "$csize")"

    if ! mount -t tmpfs -o "mode=0755,size=$bytes${opts:+,$opts}" tmpfs "$NEWROOT" 2> "$TR_RUN/mount.err"; then
        tr_fail "cannot mount the tmpfs: $(tail -n 1 "$TR_RUN/mount.err")" rd.tmpfs.opts
        return 1
    fi
    tr_unpack "$file" "$fmt" "$NEWROOT" "$sha"
    rc=$?
    tr_cleanup
    if [ "$rc" -ne 0 ]; then
        why=$(cat "$TR_RUN/why" 2> /dev/null)
        case "$rc:$why" in
            3:*) tr_fail "${why:-sha256 mismatch}" rd.tmpfs.sha256 ;;
            4:*) tr_fail "${why:-fetching $file failed}" root= ;;
            *"tmpfs is full"*) tr_fail "$why" rd.tmpfs.size ;;
            *"tmpfs ran out of inodes"*) tr_fail "$why" rd.tmpfs.opts ;;
            *) tr_fail "${why:-unpacking $img failed}" rd.tmpfs.imgfile ;;
        esac
        return 1
    fi
    if [ ! -e "$NEWROOT/etc/os-release" ] && [ ! -e "$NEWROOT/usr/lib/os-release" ]; then
        tr_say "warning: the image has no /etc/os-release; systemd's switch-root needs one"
    fi
    if _tr_is_url "$src"; then
        tr_say "root filesystem ready in RAM, from $file"
    else
        tr_say "root filesystem ready in RAM; $src unmounted"
    fi
    return 0
}

# ------------------------------------------------------------- the other hooks
# cmdline hook: claim root=tmpfs:<source> (rootok=1: dracut must not mount root= itself,
# we fill $NEWROOT in pre-mount) and wait for the source device.
tr_claim_root() {
    local src dev
    src=$(tr_source) || return 0
    # shellcheck disable=SC2034 # read by dracut's init and dracut-cmdline
    rootok=1
    case "$src" in
        NFS=*)
            # The network comes up through dracut's network modules (ip= rd.neednet=1).
            tr_say "root is a tmpfs filled from the NFS export ${src#NFS=}"
            ;;
        http://* | https://*)
            tr_say "root is a tmpfs filled from $src (over the network: ip= rd.neednet=1)"
            ;;
        *)
            if dev=$(tr_source_dev "$src"); then
                tr_say "root is a tmpfs filled from $src ($dev)"
                wait_for_dev "$dev"
            else
                warn "tmpfs-root: '$src' is not a source; accepted: /dev/..., LABEL=, UUID=, PARTUUID=, PARTLABEL=, NFS=nfs:server:/export, http(s)://server/dir (root=)"
            fi
            ;;
    esac
}

# emergency hook: when the boot gave up waiting, say which source never appeared.
tr_explain_missing_source() {
    local src dev
    if src=$(tr_source) && dev=$(tr_source_dev "$src") && [ ! -e "$dev" ]; then
        tr_say "source $src never appeared in $(getarg rd.retry= || echo 180) s (rd.retry); $dev is missing (root=)"
    fi
    return 0
}

# pre-pivot hook: when the unpacked root has SELinux enabled, load its policy and restore
# file contexts, as the original module did (a tar without --selinux support, or an image
# made without labels, leaves none).
tr_selinux() {
    local mode bin
    tr_source > /dev/null || return 0
    [ -e "$NEWROOT/etc/selinux/config" ] || return 0
    getargbool 1 selinux || return 0
    mode=$(sed -n 's/^SELINUX=//p' "$NEWROOT/etc/selinux/config")
    [ "$mode" = enforcing ] || [ "$mode" = permissive ] || return 0
    for bin in /sbin/load_policy /usr/sbin/load_policy; do
        [ -x "$NEWROOT$bin" ] && break
    done
    [ -x "$NEWROOT$bin" ] || { tr_say "warning: SELinux is $mode but the image has no load_policy"; return 0; }
    tr_say "restoring SELinux contexts (SELINUX=$mode)"
    chroot "$NEWROOT" "$bin" -i || tr_say "warning: load_policy failed"
    chroot "$NEWROOT" restorecon -R -e /proc -e /sys -e /dev / || tr_say "warning: restorecon failed"
}
