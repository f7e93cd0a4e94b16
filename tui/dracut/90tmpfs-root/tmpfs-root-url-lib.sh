#!/bin/sh
# tmpfs-root URL library: images over HTTP(S). root=tmpfs:http://server[:port]/dir or
# https://...; rd.tmpfs.imgfile is relative to it. curl (brought by dracut's url-lib
# module, with its CA bundle) streams the image into the unpack; nothing is stored whole
# unless a pinned single-stream image must be verified first. Sourced by
# /sbin/tmpfs-root-fill; the files it writes under $TR_RUN are listed in tmpfs-root-lib.sh.
#
# Built on dracut's url-lib.sh, which the fill sources before the first request (it is
# what brings curl): what it sets for every curl of the initramfs applies here too, the
# proxy of the kernel's proxy= (url-lib's $proxy) and the headers other modules put in its
# $CURL_HOME/.curlrc (exported, read by curl itself). Not its curl_fetch_url: that fetches
# a whole file to a path, where the unpack needs a stream, byte ranges and the response
# headers. Of its $curl_args, the rest is not honoured, on purpose:
#   --insecure (rd.noverifyssl): an unpinned https image is trusted because its server's
#       certificate is; without the check it would be whatever answers. Pin the image
#       (rd.tmpfs.sha256) instead: a pinned image is verified whatever the transport.
#   --location: no redirect is followed; the image, its size and its byte ranges are the
#       answers of the one server the command line names.
#   --retry 3: the boot retries for up to rd.retry seconds (below), not three times.
#   --globoff: no URL here holds a glob pattern curl would expand.

_tr_is_url() {
    case "$1" in http://* | https://*) return 0 ;; esac
    return 1
}

# curl with the retries and limits of the boot: transient failures (refused, timeouts, 5xx)
# retried with backoff for at most rd.retry seconds (TR_HTTP_RETRY_MAX), a transfer slower
# than 1 KB/s for TR_HTTP_SPEED_TIME (30) seconds abandoned; https checked against the CA
# file TR_CAFILE (/etc/tmpfs-root/ca.pem when the initramfs has one) or curl's bundle;
# through dracut's proxy= when url-lib.sh has read one.
_tr_curl() {
    local ca
    ca=${TR_CAFILE:-/etc/tmpfs-root/ca.pem}
    if [ -r "$ca" ]; then
        set -- --cacert "$ca" "$@"
    fi
    # url-lib.sh's, from the kernel's proxy=
    if [ -n "${proxy:-}" ]; then
        set -- --proxy "$proxy" "$@"
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
    {
        _tr_curl -r 0-65535 -D "$TR_RUN/http.head" "$1" 2> "$TR_RUN/curl.err"
        echo $? > "$TR_RUN/st.probe"
    } \
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
