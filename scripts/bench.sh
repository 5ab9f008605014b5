#!/usr/bin/env bash
# Benchmarks. Usage: scripts/bench.sh download [SIZE_MIB]
#
# download: serves a SIZE_MIB (default 1024) file of random bytes from a loopback HTTP
# server (python3 -m http.server on 127.0.0.1), then times, best of RUNS (default 3):
#   kubelab image pull URL --sha256 HEX     (download + verify + store in the cache)
#   curl -o FILE URL && sha256sum FILE      (the same work done sequentially)
# and prints both throughputs in MiB/s and the ratio kubelab/curl (target: >= 0.9).
# CARGO_FLAGS (e.g. --no-default-features) is passed to `cargo build --release`.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
work="$root/target/bench"

die() { echo "bench: $*" >&2; exit 1; }

now() { date +%s.%N; }

# mib_per_s BYTES SECONDS
mib_per_s() { awk -v b="$1" -v s="$2" 'BEGIN { printf "%.1f", b / 1048576 / s }'; }

# free_port: a TCP port nobody listens on right now (the kernel picks it).
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

cmd_download() {
    local size_mib=${1:-1024} runs=${RUNS:-3}
    command -v curl >/dev/null || die "curl is missing"
    command -v python3 >/dev/null || die "python3 is missing"
    local -a flags
    read -ra flags <<<"${CARGO_FLAGS:-}"
    (cd "$root" && cargo build --release "${flags[@]}" >&2)
    local kubelab="$root/target/release/kubelab"

    mkdir -p "$work/www"
    local file="$work/www/bench.img"
    if [[ ! -f $file || $(stat -c %s "$file") -ne $((size_mib * 1048576)) ]]; then
        echo "creating a ${size_mib} MiB test file" >&2
        head -c "$((size_mib * 1048576))" /dev/urandom >"$file"
    fi
    local bytes digest
    bytes=$(stat -c %s "$file")
    digest=$(sha256sum "$file" | cut -d' ' -f1)

    local port
    port=$(free_port)
    python3 -m http.server "$port" --bind 127.0.0.1 --directory "$work/www" >/dev/null 2>&1 &
    server_pid=$! # global: the EXIT trap runs after this function returns
    trap 'kill "$server_pid" 2>/dev/null || true' EXIT
    local url="http://127.0.0.1:$port/bench.img" i
    for i in $(seq 100); do
        curl -sfI "$url" >/dev/null && break
        [[ $i -eq 100 ]] && die "HTTP server did not start"
        sleep 0.1
    done

    local best_k=0 best_c=0 t0 t1 secs
    for i in $(seq "$runs"); do
        rm -rf "${work:?}/home" "${work:?}/curl.img"
        t0=$(now)
        KUBELAB_HOME="$work/home" "$kubelab" image pull "$url" --sha256 "$digest" >/dev/null 2>&1 \
            || die "kubelab pull failed"
        t1=$(now)
        secs=$(awk -v a="$t0" -v b="$t1" 'BEGIN { print b - a }')
        best_k=$(awk -v x="$best_k" -v y="$(mib_per_s "$bytes" "$secs")" 'BEGIN { print (y > x) ? y : x }')

        t0=$(now)
        curl -sf -o "$work/curl.img" "$url"
        local got
        got=$(sha256sum "$work/curl.img" | cut -d' ' -f1)
        t1=$(now)
        [[ $got == "$digest" ]] || die "curl download does not match"
        secs=$(awk -v a="$t0" -v b="$t1" 'BEGIN { print b - a }')
        best_c=$(awk -v x="$best_c" -v y="$(mib_per_s "$bytes" "$secs")" 'BEGIN { print (y > x) ? y : x }')
        echo "run $i: kubelab best ${best_k} MiB/s, curl+sha256sum best ${best_c} MiB/s" >&2
    done
    rm -rf "${work:?}/home" "${work:?}/curl.img"

    echo "size:                ${size_mib} MiB (best of $runs)"
    echo "kubelab image pull:  ${best_k} MiB/s"
    echo "curl + sha256sum:    ${best_c} MiB/s"
    echo "ratio kubelab/curl:  $(awk -v k="$best_k" -v c="$best_c" 'BEGIN { printf "%.2f", k / c }')"
}

case ${1:-} in
download) shift; cmd_download "$@" ;;
*) die "usage: $0 download [SIZE_MIB]" ;;
esac
