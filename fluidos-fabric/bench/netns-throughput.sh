#!/usr/bin/env bash
# Throughput and added RTT between two network namespaces joined by a veth pair
# (198.18.0.0/15): bare veth, the fluidos tunnel (fluidos-fabric-peer), wireguard-go, and
# boringtun-cli when it is found (BORINGTUN=path, default `boringtun-cli` on PATH; SKIP_BT=1 skips it).
# iperf3 TCP, 10 s, 1 and 4 streams, median of 3; ping RTT (20 pings, average).
# Usage (root): nice cargo build --release -p fluidos-fabric && bash fluidos-fabric/bench/netns-throughput.sh
set -euo pipefail
BIN=${BIN:-target/release/fluidos-fabric-peer}
SECS=${SECS:-10}
ID=$$
A=flbench${ID}a B=flbench${ID}b
DIR=$(mktemp -d)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  sleep 0.5
  ip netns del "$A" 2>/dev/null || true
  ip netns del "$B" 2>/dev/null || true
  rm -rf "$DIR"
}
trap cleanup EXIT
ip netns add "$A"; ip netns add "$B"
ip link add va$ID netns "$A" type veth peer name vb$ID netns "$B"
ip -n "$A" addr add 198.18.0.1/24 dev va$ID; ip -n "$A" link set va$ID up; ip -n "$A" link set lo up
ip -n "$B" addr add 198.18.0.2/24 dev vb$ID; ip -n "$B" link set vb$ID up; ip -n "$B" link set lo up

median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
measure() { # label server-address
  local label=$1 addr=$2
  ip netns exec "$B" iperf3 -s -D -B "$addr" -p 5201 --pidfile "$DIR/iperf.pid" >/dev/null
  sleep 0.5
  for streams in 1 4; do
    local runs=()
    for _ in 1 2 3; do
      runs+=("$(ip netns exec "$A" iperf3 -c "$addr" -p 5201 -t "$SECS" -P "$streams" -J \
        | awk -F: '/"sum_received"/{f=1} f && /"bits_per_second"/{gsub(/[ ,]/,"",$2); print $2/1e6; exit}')")
    done
    printf '%-14s %d stream(s): median %s Mbit/s (runs: %s)\n' "$label" "$streams" \
      "$(printf '%s\n' "${runs[@]}" | median)" "${runs[*]}"
  done
  kill "$(cat "$DIR/iperf.pid")" 2>/dev/null || true
  sleep 0.3
  local rtt
  rtt=$(ip netns exec "$A" ping -q -c 20 -i 0.05 "$addr" | awk -F/ '/rtt/{print $5}')
  printf '%-14s ping RTT avg %s ms\n' "$label" "$rtt"
}

[ -n "${SKIP_BARE:-}" ] || measure "bare veth" 198.18.0.2

# fluidos tunnel
KA=$DIR/a.key KB=$DIR/b.key
PA=$($BIN --pubkey "$KA"); PB=$($BIN --pubkey "$KB")
OA=fdf0:6a54:bda7::a OB=fdf0:6a54:bda7::b
cat > "$DIR/a.json" <<JSON
{"interface":"flba$ID","offload":${OFFLOAD:-true},"listen":"198.18.0.1:51820","key_file":"$KA","address":"$OA",
 "peers":[{"public_key":"$PB","endpoint":"198.18.0.2:51820","allowed_ips":["$OB/128"]}]}
JSON
cat > "$DIR/b.json" <<JSON
{"interface":"flbb$ID","offload":${OFFLOAD:-true},"listen":"198.18.0.2:51820","key_file":"$KB","address":"$OB",
 "peers":[{"public_key":"$PA","endpoint":"198.18.0.1:51820","allowed_ips":["$OA/128"]}]}
JSON
ip netns exec "$A" "$BIN" "$DIR/a.json" > "$DIR/a.out" & PIDS+=($!)
ip netns exec "$B" "$BIN" "$DIR/b.json" > "$DIR/b.out" & PIDS+=($!)
sleep 1
ip netns exec "$A" ping -c 2 -W 2 "$OB" >/dev/null
measure "fluidos" "$OB"
for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
PIDS=(); sleep 1

# wireguard-go on both sides, configured by wg
[ -z "${SKIP_WG:-}" ] || exit 0
WA=wga$ID WB=wgb$ID
ip netns exec "$A" env WG_PROCESS_FOREGROUND=1 wireguard-go -f "$WA" >/dev/null 2>&1 & PIDS+=($!)
ip netns exec "$B" env WG_PROCESS_FOREGROUND=1 wireguard-go -f "$WB" >/dev/null 2>&1 & PIDS+=($!)
sleep 1
ip netns exec "$A" wg set "$WA" private-key "$KA" listen-port 51820 peer "$PB" endpoint 198.18.0.2:51820 allowed-ips "$OB/128"
ip netns exec "$B" wg set "$WB" private-key "$KB" listen-port 51820 peer "$PA" endpoint 198.18.0.1:51820 allowed-ips "$OA/128"
ip -n "$A" -6 addr add "$OA/128" dev "$WA" nodad; ip -n "$A" link set "$WA" mtu 1420 up; ip -n "$A" -6 route add "$OB/128" dev "$WA"
ip -n "$B" -6 addr add "$OB/128" dev "$WB" nodad; ip -n "$B" link set "$WB" mtu 1420 up; ip -n "$B" -6 route add "$OA/128" dev "$WB"
ip netns exec "$A" ping -c 2 -W 2 "$OB" >/dev/null
measure "wireguard-go" "$OB"
for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
PIDS=(); sleep 1
rm -f /var/run/wireguard/"$WA".sock /var/run/wireguard/"$WB".sock

# boringtun-cli 0.7.1 (`cargo install boringtun-cli`) on both sides, configured by wg
BT=${BORINGTUN:-boringtun-cli}
[ -z "${SKIP_BT:-}" ] || exit 0
command -v "$BT" >/dev/null || { echo "boringtun-cli not found: skipped"; exit 0; }
BA=bta$ID BB=btb$ID
ip netns exec "$A" "$BT" -f --disable-drop-privileges "$BA" >/dev/null 2>&1 & PIDS+=($!)
ip netns exec "$B" "$BT" -f --disable-drop-privileges "$BB" >/dev/null 2>&1 & PIDS+=($!)
sleep 1
ip netns exec "$A" wg set "$BA" private-key "$KA" listen-port 51820 peer "$PB" endpoint 198.18.0.2:51820 allowed-ips "$OB/128"
ip netns exec "$B" wg set "$BB" private-key "$KB" listen-port 51820 peer "$PA" endpoint 198.18.0.1:51820 allowed-ips "$OA/128"
ip -n "$A" -6 addr add "$OA/128" dev "$BA" nodad; ip -n "$A" link set "$BA" mtu 1420 up; ip -n "$A" -6 route add "$OB/128" dev "$BA"
ip -n "$B" -6 addr add "$OB/128" dev "$BB" nodad; ip -n "$B" link set "$BB" mtu 1420 up; ip -n "$B" -6 route add "$OA/128" dev "$BB"
ip netns exec "$A" ping -c 2 -W 2 "$OB" >/dev/null
measure "boringtun-cli" "$OB"
rm -f /var/run/wireguard/"$BA".sock /var/run/wireguard/"$BB".sock
