# shellcheck shell=bash
# Serves kubelab's test image over loopback HTTP inside the lab namespace (sourced after
# scripts/dev/netns-libvirt.sh and lab_netns_up).
#
#   lab_serve_image DIR PORT LOG   start `python3 -m http.server` on 127.0.0.1:PORT in the
#                                  namespace, wait until it answers; sets LAB_HTTP_PID
#   lab_serve_mirror DIR LOG       serve DIR (the test mirror, scripts/dev/apt-repo.sh) on
#                                  $LAB_MIRROR_ADDR:8098, an address of the namespace that its
#                                  VMs reach through their NAT network; sets LAB_MIRROR_PID
#   lab_image_sha DIR FILE         the SHA-256 of FILE from DIR/SHA256SUMS

LAB_HTTP_PID=""
LAB_MIRROR_PID=""
# images/testimage/build.sh's TEST_MIRROR_ADDR: the bare image's apt source.
LAB_MIRROR_ADDR=172.31.255.1

# lab_http DIR ADDR PORT LOG PROBE: an HTTP server for DIR, once PROBE answers; prints its PID.
lab_http() {
    local dir=$1 addr=$2 port=$3 log=$4 probe=$5 pid deadline
    "${LAB_EXEC[@]}" python3 -m http.server --bind "$addr" --directory "$dir" "$port" >"$log" 2>&1 &
    pid=$!
    deadline=$((SECONDS + 30))
    until lab_exec curl -fsS -o /dev/null "http://$addr:$port/$probe"; do
        if [ "$SECONDS" -ge "$deadline" ]; then
            lab_log "the HTTP server on $addr:$port did not answer"
            return 1
        fi
        sleep 0.2
    done
    echo "$pid"
}

lab_serve_mirror() {
    lab_exec ip addr add "$LAB_MIRROR_ADDR/32" dev lo
    LAB_MIRROR_PID=$(lab_http "$1" "$LAB_MIRROR_ADDR" 8098 "$2" k8s/Release.key)
}

lab_serve_image() {
    LAB_HTTP_PID=$(lab_http "$1" 127.0.0.1 "$2" "$3" SHA256SUMS)
}

lab_image_sha() {
    awk -v f="$2" '$2 == f {print $1}' "$1/SHA256SUMS"
}
