#!/usr/bin/env bash
# Blob fetch over QUIC against TCP + Noise + Yamux on loopback, interleaved: two
# two-node testnets, one whose daemons listen (and so can be reached) only on TCP, one
# only on QUIC (testnet nodes run without mDNS and UPnP, so no other path appears).
# Each round fetches the same blob over each, `lattice blob get HASH -o FILE` from CLI
# start to exit, after dropping the fetcher's copy.
#
#   ROUNDS=5 MIB=256 LATTICE=target/release/lattice bash testnet/examples/quic-vs-tcp.sh
set -euo pipefail
lattice() { "${LATTICE:-lattice}" "$@"; }
ROUNDS=${ROUNDS:-5}
MIB=${MIB:-256}
now() { date +%s.%N; }
json() { python3 -c "import json,sys; d=json.load(sys.stdin); print($1)"; }

work=$(mktemp -d)
down() {
  for t in tcp quic; do LATTICE_TESTNET="$work/$t" lattice testnet down >/dev/null 2>&1 || true; done
  rm -rf "$work"
}
trap down EXIT
head -c $((MIB << 20)) /dev/urandom >"$work/blob.bin"

declare -A listen=([tcp]=/ip4/127.0.0.1/tcp/0 [quic]=/ip4/127.0.0.1/udp/0/quic-v1)
for t in tcp quic; do
  LATTICE_TESTNET="$work/$t" lattice testnet up -n 2 -- \
    --listen "${listen[$t]}" >/dev/null
  hash=$(LATTICE_TESTNET="$work/$t" lattice testnet exec 0 -- blob add "$work/blob.bin" --json |
    json 'd["hash"]')
  # The fetcher reaches the provider by the one transport only.
  addrs=$(LATTICE_TESTNET="$work/$t" lattice testnet exec 1 -- peers --json |
    json '" ".join(a for p in d if p["connected"] for a in p["addrs"])')
  case "$t:$addrs" in
    tcp:*/tcp/*) case "$addrs" in *quic*) echo "QUIC in the TCP testnet: $addrs" >&2; exit 1 ;; esac ;;
    quic:*quic-v1*) case "$addrs" in */tcp/*) echo "TCP in the QUIC testnet: $addrs" >&2; exit 1 ;; esac ;;
    *) echo "node 1 is not connected over $t: $addrs" >&2; exit 1 ;;
  esac
done

fetch() {
  local t=$1 out="$work/out-$1.bin" t0
  export LATTICE_TESTNET="$work/$t"
  lattice testnet exec 1 -- blob rm "$hash" >/dev/null 2>&1 || true
  rm -f "$out"
  t0=$(now)
  lattice testnet exec 1 -- blob get "$hash" -o "$out" >/dev/null
  echo "$MIB * 1.048576 / ($(now) - $t0)" | bc -l
}

echo "round tcp_MBps quic_MBps"
for round in $(seq 1 "$ROUNDS"); do
  printf "%d %.1f %.1f\n" "$round" "$(fetch tcp)" "$(fetch quic)"
done
