#!/usr/bin/env bash
# Ten nodes, split in two; both sides write; heal; every write made on either side must
# be on every node.
#
#   LATTICE=target/release/lattice bash testnet/examples/partition-heal.sh
set -euo pipefail
lattice() { "${LATTICE:-lattice}" "$@"; }

export LATTICE_TESTNET=${LATTICE_TESTNET:-$(mktemp -d)}
trap 'lattice testnet down >/dev/null 2>&1 || true' EXIT
n=10

lattice testnet up -n $n
doc=$(lattice testnet exec 0 -- doc create ledger --open --json | grep '"doc"' | cut -d'"' -f4)
for ((i = 1; i < n; i++)); do lattice testnet exec "$i" -- doc join "$doc" >/dev/null; done
lattice testnet wait-converged "$doc" --timeout 60 >/dev/null

lattice testnet partition "0-4|5-9"
written=()
for ((i = 0; i < n; i++)); do
  for k in 1 2 3; do
    # Record only acknowledged writes: those are the ones that must survive.
    if lattice testnet exec "$i" -- doc add "$doc" entries "n$i-$k" >/dev/null; then
      written+=("n$i-$k")
    fi
  done
done
echo "${#written[@]} writes acknowledged across the partition"
left=$(lattice testnet exec 0 -- doc get "$doc" entries --json | grep -c '"n' || true)
echo "node 0 sees $left of them before the heal (its own side only)"

lattice testnet heal
lattice testnet wait-converged "$doc" --timeout 120

missing=0
for ((i = 0; i < n; i++)); do
  have=$(lattice testnet exec "$i" -- doc get "$doc" entries --json)
  for w in "${written[@]}"; do
    if ! grep -q "\"$w\"" <<<"$have"; then
      echo "node $i is missing $w" >&2
      missing=$((missing + 1))
    fi
  done
done
if ((missing > 0)); then
  echo "FAILED: $missing acknowledged writes missing" >&2
  exit 1
fi
echo "every acknowledged write is on every node"
