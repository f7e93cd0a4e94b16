#!/bin/sh
# tmpfs-root shards library: sharded images. Layout (tui/image_index.py describes it
# whole): a zstd skippable frame holding a text index, then N zstd shards of files and one
# zstd part of directories, back to back. The pinned sha256 is the index frame's; the
# index holds every part's sha256. Sourced by /sbin/tmpfs-root-fill after
# tmpfs-root-img-lib.sh; the files it writes under $TR_RUN are listed in tmpfs-root-lib.sh.
# POSIX sh plus `local`.

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
    {
        _tr_read_range "$src" "$at" "$9" 2> "$st.dd"
        echo $? > "$st.read"
    } \
        | {
            zstd -dcq
            echo $? > "$st.decomp"
        } \
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
    {
        _tr_read_range "$1" "$4" "$5" 2> "$TR_RUN/shard/$2.dd"
        echo $? > "$TR_RUN/shard/$2.read"
    } \
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
        | {
            zstd -dcq
            echo $? > "$st.decomp"
        } \
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
    _tr_run_refused "$5" "$6" || return
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
        _tr_run_damaged "$1" "$5" "$6" "$4" "$name" > "$TR_RUN/shard/$5.why"
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

# Fails with the status of the first of shards $1 to $2 that failed its check (its .why says
# why), when one did.
_tr_run_refused() {
    local from to i got
    from=$1
    to=$2
    i=$from
    while [ "$i" -le "$to" ]; do
        if [ -e "$TR_RUN/shard/$i.why" ]; then
            read -r got < "$TR_RUN/shard/$i.why"
            return "${got%% *}"
        fi
        i=$((i + 1))
    done
    return 0
}

# Which shard of the run of shards $2 to $3 of image $1 ($4: the number of parts) is damaged:
# each one on its own through zstd's test. Prints "1 <reason>" naming it, or naming the run
# ($5: how a message names it) when none alone is.
_tr_run_damaged() {
    local file from to count name i
    file=$1
    from=$2
    to=$3
    count=$4
    name=$5
    i=$from
    while [ "$i" -le "$to" ]; do
        # shellcheck disable=SC2046 # the shard's index fields: kind offset length ...
        set -- $(sed -n "${i}p" "$TR_RUN/parts")
        if ! _tr_read_range "$file" "$2" "$3" 2> /dev/null | zstd -tq 2> /dev/null; then
            echo "1 $(_tr_part_name "$i" "$count") of ${file##*/} is damaged (zstd failed)"
            return 0
        fi
        i=$((i + 1))
    done
    echo "1 $name of ${file##*/} is damaged (zstd failed)"
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

# Unpack sharded image $1 into $2 (sha256 $3 pinned, or empty), with tar options $4: the
# index is checked (and, when pinned, hashed) before anything is written; the shards go in
# parallel, each verified before any of it is unpacked when pinned, then the directory part,
# only once every shard is in. No shard's tar can make a symbolic link, so none can lead
# another out of the new root: the links come with the directory part, alone, whose GNU tar
# makes every link that could lead out only at its very end. Fails with the reason in
# $TR_RUN/why (3: a hash).
_tr_unpack_sharded() {
    local file dest sha taropts count jobs total progress
    file=$1
    dest=$2
    sha=$(printf '%s' "$3" | tr '[:upper:]' '[:lower:]')
    taropts=$4
    _tr_tar_has --totals && taropts="$taropts --totals"
    _tr_sharded_index "$file" "$sha" || return
    total=$(sed -n 's/^total //p' "$TR_RUN/index")
    count=$(grep -c '' "$TR_RUN/parts")
    _tr_nolinks_how || return 1
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
    _tr_unpack_shards "$file" "$dest" "$sha" "$taropts" "$count" "$jobs"
    _tr_unpack_dirs "$file" "$dest" "$sha" "$taropts" "$count"
    kill "$progress" 2> /dev/null
    wait "$progress" 2> /dev/null
    _tr_sharded_said "$file" "$dest" "$sha" "$count" "$jobs"
}

# The index of sharded image $1 read once, into RAM (what is parsed is what is hashed,
# whatever the source, an NFS server, would answer to a second read), checked, and hashed
# against sha256 $2 when it is pinned: $TR_RUN/index as tr_index prints it, $TR_RUN/parts its
# parts' lines. Fails with the reason in $TR_RUN/why (3: the hash, 4: the server).
_tr_sharded_index() {
    local file sha head frame got
    file=$1
    sha=$2
    if _tr_is_url "$file"; then
        if [ "$(cat "$TR_RUN/http.ranges")" != yes ]; then
            echo "$file: the server does not answer range requests, which a sharded image needs" \
                "(serve it with one that does, or make the image with --shards 1)" > "$TR_RUN/why"
            return 4
        fi
        head=$TR_RUN/http.bin
    else
        head=$TR_RUN/index.bin
        head -c 1048584 "$file" > "$head" || return 1
    fi
    if ! tr_index "$head" "$(_tr_size "$file")" > "$TR_RUN/index"; then
        echo "${file##*/}: $(sed -n 's/^ERR //p' "$TR_RUN/index")" > "$TR_RUN/why"
        return 1
    fi
    frame=$(sed -n 's/^frame //p' "$TR_RUN/index")
    grep -e '^files ' -e '^dirs ' "$TR_RUN/index" > "$TR_RUN/parts"
    if [ -n "$sha" ]; then
        got=$(head -c "$frame" "$head" | _tr_sha256 | cut -d' ' -f1)
        if [ "$got" != "$sha" ]; then
            echo "sha256 of the image (its index) is $got, not the expected one" > "$TR_RUN/why"
            return 3
        fi
    fi
}

# How no shard makes a symbolic link, in $_tr_nolinks: GNU tar is told so ("transform", and
# runs shards side by side); another tar is followed by a search of the new root, one shard
# at a time ("scan"). Fails, with the reason in $TR_RUN/why, when neither can be done.
_tr_nolinks_how() {
    if _tr_tar_has --ignore-zeros && _tr_tar_has --transform && [ "${_tr_checkpoint:-}" = yes ]; then
        _tr_nolinks=transform
    elif command -v find > /dev/null; then
        _tr_nolinks=scan
    else
        echo "this initramfs can unpack no sharded image safely: its tar cannot be told to make no" \
            "symbolic link and it has no find (install GNU tar, or make the image with --shards 1)" > "$TR_RUN/why"
        return 1
    fi
}

# The shards of sharded image $1 unpacked into $2 by $6 workers side by side ($3: the pinned
# sha256 or nothing, $4: tar's options, $5: the number of parts); each shard that is in gets
# $TR_RUN/shard/<n>.done, one that failed <n>.why.
_tr_unpack_shards() {
    local file dest sha taropts count jobs w pids line
    file=$1
    dest=$2
    sha=$3
    taropts=$4
    count=$5
    jobs=$6
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
}

# The directory part of sharded image $1 unpacked into $2 ($3-$5 as _tr_unpack_shards'), and
# only once every shard is in: its directories' owners, modes, times and xattrs are the final
# word, and no link exists while another tar runs.
_tr_unpack_dirs() {
    local file dest sha taropts count n
    file=$1
    dest=$2
    sha=$3
    taropts=$4
    count=$5
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
}

# What the parts of sharded image $1, unpacked into $2 by $5 workers, came to ($3: the pinned
# sha256 or nothing, $4: the number of parts): the unpack's lines, or the first failed part's
# reason in $TR_RUN/why and its status.
_tr_sharded_said() {
    local file dest sha count jobs n why
    file=$1
    dest=$2
    sha=$3
    count=$4
    jobs=$5
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
