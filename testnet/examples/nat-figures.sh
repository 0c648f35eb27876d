#!/usr/bin/env bash
# NAT traversal figures on a namespace testnet (root): node 0 on the internet, nodes 1 and
# 2 behind port-preserving ("cone") NATs, node 3 behind a symmetric NAT. Each round brings
# the testnet up, and measures:
#   reserve_s  from `testnet up` returning to all three NATed nodes holding a relay slot
#   direct_s   from node 2 dialling node 1 through its relay to a direct connection
#   direct_MBps  node 2 fetching a blob from node 1 (direct, after the hole punch)
#   relayed_MBps node 3 fetching the same blob from node 1 (through node 0's relay)
#   via_relay    bytes node 0 received from node 2's dial to the end of its fetch, as a
#                share of the blob: what of the NATed pair's traffic went through the relay
#   relayed_share the same for node 3's fetch (about 1: all of it)
# Every fetch is `lattice blob get HASH -o FILE` from start to exit.
#
#   sudo ROUNDS=20 MIB=32 LATTICE=target/release/lattice bash testnet/examples/nat-figures.sh
set -euo pipefail
lattice() { "${LATTICE:-lattice}" "$@"; }
ROUNDS=${ROUNDS:-5}
MIB=${MIB:-32}
now() { date +%s.%N; }
since() { echo "$(now) - $1" | bc -l; }
json() { python3 -c "import json,sys; d=json.load(sys.stdin); print($1)"; }

work=$(mktemp -d)
trap 'lattice testnet down >/dev/null 2>&1 || true; rm -rf "$work"' EXIT
cat >"$work/topology.toml" <<'TOML'
[[node]]
index = 1
nat = "cone"
[[node]]
index = 2
nat = "cone"
[[node]]
index = 3
nat = "symmetric"
TOML
head -c $((MIB << 20)) /dev/urandom >"$work/blob.bin"

# Bytes received on every interface of node 0's namespace (it is the relay).
relay_rx() {
  ip netns exec "$ns0" cat /proc/net/dev |
    awk -F'[: ]+' 'NR > 2 && $2 != "lo" { n += $3 } END { print n }'
}

echo "round reserve_s direct_s direct_MBps relayed_MBps via_relay relayed_share"
for round in $(seq 1 "$ROUNDS"); do
  # A new testnet every round: new identities, empty stores.
  export LATTICE_TESTNET="$work/tn-$round"
  lattice testnet up -n 4 --netns --topology "$work/topology.toml" >/dev/null
  ns0=$(json 'd["netns"]["hosts"][0]["netns"]' <"$LATTICE_TESTNET/testnet.json")
  t0=$(now)
  for i in 1 2 3; do
    until lattice testnet exec "$i" -- status --json | json 'len(d["relayed_addrs"])' | grep -qv '^0$'; do
      sleep 0.2
    done
  done
  reserve=$(since "$t0")
  id1=$(lattice testnet exec 1 -- id --json | json 'd["peer_id"]')
  circuit=$(lattice testnet exec 1 -- status --json | json 'd["relayed_addrs"][0]')
  case "$circuit" in */p2p/"$id1") ;; *) circuit="$circuit/p2p/$id1" ;; esac
  t1=$(now)
  rx0=$(relay_rx)
  lattice testnet exec 2 -- dial "$circuit" >/dev/null
  until lattice testnet exec 2 -- peers --json |
    json "any(p['peer_id']=='$id1' and p['connected'] and not p['relayed'] for p in d)" | grep -q True; do
    sleep 0.1
  done
  direct=$(since "$t1")
  hash=$(lattice testnet exec 1 -- blob add "$work/blob.bin" --json | json 'd["hash"]')
  rate() {
    local i=$1 out="$work/out-$1.bin" t
    t=$(now)
    lattice testnet exec "$i" -- blob get "$hash" -o "$out" >/dev/null
    echo "$MIB * 1.048576 / $(since "$t")" | bc -l
  }
  bytes=$((MIB << 20))
  direct_rate=$(rate 2)
  via=$(echo "($(relay_rx) - $rx0) / $bytes" | bc -l)
  # Node 3 (symmetric NAT) reaches node 1 only through the relay.
  lattice testnet exec 3 -- dial "$circuit" >/dev/null
  rx3=$(relay_rx)
  relayed_rate=$(rate 3)
  share=$(echo "($(relay_rx) - $rx3) / $bytes" | bc -l)
  printf "%d %.1f %.2f %.1f %.1f %.4f %.3f\n" "$round" "$reserve" "$direct" \
    "$direct_rate" "$relayed_rate" "$via" "$share"
  lattice testnet down >/dev/null
done
