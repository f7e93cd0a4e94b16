#!/bin/sh
# tmpfs-root image library: archive formats, sizes (the image's, the tmpfs's, RAM's), and
# the unpack of a single-stream image (tr_unpack, which hands a sharded one to
# tmpfs-root-shards-lib.sh). Sourced by /sbin/tmpfs-root-fill after tmpfs-root-lib.sh,
# with tmpfs-root-url-lib.sh and tmpfs-root-shards-lib.sh beside it; the files it writes
# under $TR_RUN are listed in tmpfs-root-lib.sh. POSIX sh plus `local`.

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
    if _tr_is_url "$1"; then # from what tr_http_probe fetched
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
    local file fmt dest sha decomp taropts
    file=$1
    fmt=$2
    dest=$3
    sha=$4
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
    _tr_unpack_stream "$file" "$fmt" "$dest" "$decomp" "$taropts" "${1##*/}"
}

# Unpack single-stream image $1 (a file, a URL, or the copy _tr_verify_stream hashed) of
# format $2 into $3 through decompressor $4 and tar with options $5; $6: how the image is
# named. Fails with a one-line reason in $TR_RUN/why (4: the server).
_tr_unpack_stream() {
    local file fmt dest decomp taropts name reader progress limit
    file=$1
    fmt=$2
    dest=$3
    decomp=$4
    taropts=$5
    name=$6
    rm -f "$TR_RUN/data" "$TR_RUN"/st.*
    mkfifo "$TR_RUN/data" || return 1
    if _tr_is_url "$file"; then
        # Streamed: download, decompress and tar at once; nothing is stored on the way.
        {
            _tr_curl "$file" > "$TR_RUN/data" 2> "$TR_RUN/curl.err"
            echo $? > "$TR_RUN/st.fetch"
        } &
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
    {
        cat < "$TR_RUN/data"
        echo $? > "$TR_RUN/st.read"
    } \
        | {
            $decomp
            echo $? > "$TR_RUN/st.decomp"
        } \
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
    # The RAM copy goes once its size is said (the last line reads it).
    _tr_stream_said "$file" "$fmt" "$dest" "$decomp" "$name" "$limit"
    set -- $?
    [ "$file" = "$TR_RUN/image.buf" ] && rm -f "$file"
    return "$1"
}

# What the single-stream pipeline's stages said (their statuses under $TR_RUN): the unpack's
# one line, or its reason in $TR_RUN/why and a failure. $1-$4 as _tr_unpack_stream's, $5: how
# the image is named, $6: the bytes of tar it records (or nothing).
_tr_stream_said() {
    local file fmt dest decomp name limit
    file=$1
    fmt=$2
    dest=$3
    decomp=$4
    name=$5
    limit=$6
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
            {
                _tr_curl "$1" 2> "$TR_RUN/curl.err"
                echo $? > "$TR_RUN/st.copy"
            } | head -c $((size + 1)) > "$src"
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

# The sha256 of stdin, as "HEX ..." on one line: OpenSSL's where the initramfs has it (it
# uses the CPU's SHA extensions: 4x coreutils' speed here), else sha256sum.
_tr_sha256() {
    if command -v openssl > /dev/null 2>&1; then
        openssl dgst -sha256 -r
    else
        sha256sum
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

# Read what a tar left of its input (the end-of-archive padding, or all the rest when it
# stopped early, so that the decompressor's status speaks of the data alone and a hash sees
# every byte), but at most $1 bytes: past them $2 is made, and the rest is left unread.
_tr_drain() {
    head -c "$1" > /dev/null
    case $(head -c 1 | wc -c) in *1*) : > "$2" ;; esac
}

# The first thing tar said in $1 (its stderr) about what went wrong: not its byte count
# (--totals) nor its closing words ("Exiting with failure status due to previous errors").
_tr_tar_error() {
    grep -v -e '^$' -e '^Total bytes read' -e 'Exiting with failure status' -e 'Error is not recoverable' "$1" \
        | head -n 1
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
