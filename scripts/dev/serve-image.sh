# shellcheck shell=bash
# Serves kubelab's test image over loopback HTTP inside the lab namespace (sourced after
# scripts/dev/netns-libvirt.sh and lab_netns_up).
#
#   lab_serve_image DIR PORT LOG   start `python3 -m http.server` on 127.0.0.1:PORT in the
#                                  namespace, wait until it answers; sets LAB_HTTP_PID
#   lab_image_sha DIR FILE         the SHA-256 of FILE from DIR/SHA256SUMS

LAB_HTTP_PID=""

lab_serve_image() {
    local dir=$1 port=$2 log=$3 deadline
    lab_exec python3 -m http.server --bind 127.0.0.1 --directory "$dir" "$port" >"$log" 2>&1 &
    LAB_HTTP_PID=$!
    deadline=$((SECONDS + 30))
    until lab_exec curl -fsS -o /dev/null "http://127.0.0.1:$port/SHA256SUMS"; do
        if [ "$SECONDS" -ge "$deadline" ]; then
            lab_log "the image server on port $port did not answer"
            return 1
        fi
        sleep 0.2
    done
}

lab_image_sha() {
    awk -v f="$2" '$2 == f {print $1}' "$1/SHA256SUMS"
}
