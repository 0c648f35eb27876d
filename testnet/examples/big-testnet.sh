#!/usr/bin/env bash
# The cost of a big process testnet: how long `testnet up -n N` takes, how many peers each
# node stays connected to once idle, and the memory of all the nodes together (RSS, PSS,
# anonymous, summed from /proc/PID/smaps_rollup). Figures in docs/benchmarks.md.
#
#   LATTICE=target/release/lattice IDLE=60 bash testnet/examples/big-testnet.sh [N]
set -euo pipefail
lattice() { "${LATTICE:-lattice}" "$@"; }

n=${1:-100}
export LATTICE_TESTNET=${LATTICE_TESTNET:-$(mktemp -d)}
trap 'lattice testnet down >/dev/null 2>&1 || true' EXIT

start=$(date +%s.%N)
lattice testnet up -n "$n" >/dev/null
end=$(date +%s.%N)
echo "testnet up -n $n: $(echo "$end - $start" | bc) s"
sleep "${IDLE:-60}"
lattice testnet status --json | python3 -c '
import json, statistics, sys
nodes = json.load(sys.stdin)
peers = sorted(n["peers"] or 0 for n in nodes)
print(f"connected peers per node after idle: min {peers[0]}, median {statistics.median(peers)}, max {peers[-1]}")
kib = {"Rss": 0, "Pss": 0, "Anonymous": 0}
for n in nodes:
    for line in open("/proc/%d/smaps_rollup" % n["pid"]):
        key, _, value = line.partition(":")
        if key in kib:
            kib[key] += int(value.split()[0])
mib = {k: v / 1024 for k, v in kib.items()}
print("all %d nodes: RSS %.0f MiB, PSS %.0f MiB, anonymous %.0f MiB"
      % (len(nodes), mib["Rss"], mib["Pss"], mib["Anonymous"]))
'
