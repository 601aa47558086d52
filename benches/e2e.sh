#!/usr/bin/env bash
# End-to-end benchmark: the same two-host namespace testbed joined (1) by dnet over GRE and
# (2) by the kernel's VXLAN overlay (bridge + vxlan), measured one after the other in the same
# run with iperf3 (TCP, one stream), so the ratio dnet / kernel VXLAN is meaningful on a noisy
# machine. Prints medians of REPS runs of DUR seconds.
#
# Usage: sudo benches/e2e.sh           (env: REPS=3 DUR=10 WORKERS=<cores>)
# Needs: iproute2, iperf3 (installed with apt-get if missing), a release build of dnet-switch.
set -euo pipefail
cd "$(dirname "$0")/.."
REPS=${REPS:-3}; DUR=${DUR:-10}; WORKERS=${WORKERS:-$(nproc)}
BIN=${DNET_SWITCH_BIN:-target/release/dnet-switch}
[ "$(id -u)" = 0 ] || { echo "run as root (network namespaces)"; exit 1; }
command -v iperf3 >/dev/null || { apt-get update -qq && apt-get install -y -qq iperf3 >/dev/null; }
[ -x "$BIN" ] || cargo build --release -p dnet
P="dnb$$"   # unique prefix: namespaces ${P}ah ${P}bh ${P}ac ${P}bc
NS="${P}ah ${P}bh ${P}ac ${P}bc"
PIDS=()
cleanup() {
    for p in "${PIDS[@]:-}"; do [ -n "$p" ] && kill "$p" 2>/dev/null || true; done
    for p in "${PIDS[@]:-}"; do [ -n "$p" ] && wait "$p" 2>/dev/null || true; done
    PIDS=()
    for n in $NS; do ip netns del "$n" 2>/dev/null || true; done
}
trap cleanup EXIT INT TERM

topology() {   # $1 = container MTU
    for n in $NS; do
        ip netns add "$n"; ip -n "$n" link set lo up
        ip netns exec "$n" sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1
    done
    ip link add ul netns ${P}ah type veth peer name ul netns ${P}bh
    ip -n ${P}ah addr add 10.200.0.1/24 dev ul; ip -n ${P}ah link set ul up
    ip -n ${P}bh addr add 10.200.0.2/24 dev ul; ip -n ${P}bh link set ul up
    for h in a b; do
        ip link add eth0 netns ${P}${h}c type veth peer name vc netns ${P}${h}h
        ip -n ${P}${h}h link add br0 type bridge
        ip -n ${P}${h}h link set vc master br0; ip -n ${P}${h}h link set vc up; ip -n ${P}${h}h link set br0 up
        ip -n ${P}${h}c link set eth0 mtu "$1" up
    done
    ip -n ${P}ac addr add 10.77.0.1/24 dev eth0; ip -n ${P}bc addr add 10.77.0.2/24 dev eth0
}

measure() {    # $1 = label; prints "label gbps" lines for each rep, then the median
    local label=$1 vals=() rtt
    ip netns exec ${P}bc iperf3 -s -1 -D -p 5201 >/dev/null 2>&1 || true
    sleep 0.3
    # warm-up (ARP, learning)
    ip netns exec ${P}ac iperf3 -c 10.77.0.2 -t 1 >/dev/null 2>&1 || true
    for r in $(seq "$REPS"); do
        ip netns exec ${P}bc iperf3 -s -1 -D -p 5201 >/dev/null 2>&1; sleep 0.3
        v=$(ip netns exec ${P}ac iperf3 -c 10.77.0.2 -t "$DUR" -J | python3 -c 'import json,sys; print(json.load(sys.stdin)["end"]["sum_received"]["bits_per_second"]/1e9)')
        vals+=("$v"); printf '  %-12s run %d: %.2f Gbit/s\n' "$label" "$r" "$v" >&2
    done
    printf '%s\n' "${vals[@]}" | sort -g | awk '{a[NR]=$1} END{print a[int((NR+1)/2)]}'
}

echo "== dnet (GRE, $WORKERS worker(s))" >&2
topology 1462
for h in a b; do
    peer=10.200.0.2; [ $h = b ] && peer=10.200.0.1
    ip netns exec ${P}${h}h "$BIN" --peer $peer --bridge br0 --workers "$WORKERS" \
        --control-socket /run/dnet/${P}$h.sock --log-level warn &
    PIDS+=($!)
done
sleep 1
dnet=$(measure dnet)
cleanup

echo "== kernel VXLAN (bridge + vxlan)" >&2
topology 1450
for h in a b; do
    me=10.200.0.1; peer=10.200.0.2; [ $h = b ] && { me=10.200.0.2; peer=10.200.0.1; }
    ip -n ${P}${h}h link add vxlan42 type vxlan id 42 dstport 4789 local $me remote $peer dev ul
    ip -n ${P}${h}h link set vxlan42 master br0; ip -n ${P}${h}h link set vxlan42 up
done
vx=$(measure vxlan)
cleanup

python3 - "$dnet" "$vx" <<'PY'
import sys
d, v = map(float, sys.argv[1:])
print(f"TCP 1 stream, median: dnet {d:.2f} Gbit/s, kernel VXLAN {v:.2f} Gbit/s, ratio dnet/VXLAN {d/v:.2f}")
PY
