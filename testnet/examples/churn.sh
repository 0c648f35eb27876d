#!/usr/bin/env bash
# Nodes crash (SIGKILL) and come back while the others keep writing. Afterwards every
# node must count exactly the increments that were acknowledged.
#
#   LATTICE=target/release/lattice bash testnet/examples/churn.sh [ROUNDS]
set -euo pipefail
lattice() { "${LATTICE:-lattice}" "$@"; }

export LATTICE_TESTNET=${LATTICE_TESTNET:-$(mktemp -d)}
trap 'lattice testnet down >/dev/null 2>&1 || true' EXIT
n=6
rounds=${1:-5}

lattice testnet up -n $n
doc=$(lattice testnet exec 0 -- doc create counter --open --json | grep '"doc"' | cut -d'"' -f4)
for ((i = 1; i < n; i++)); do lattice testnet exec "$i" -- doc join "$doc" >/dev/null; done

acked=0
for ((r = 1; r <= rounds; r++)); do
  # Node 0 is everyone's bootstrap; the others take turns crashing.
  victim=$((1 + RANDOM % (n - 1)))
  lattice testnet kill "$victim" >/dev/null
  for ((i = 0; i < n; i++)); do
    ((i == victim)) && continue
    if lattice testnet exec "$i" -- doc incr "$doc" hits >/dev/null; then
      acked=$((acked + 1))
    fi
  done
  lattice testnet restart "$victim" >/dev/null
  # The restarted node writes too, straight away.
  if lattice testnet exec "$victim" -- doc incr "$doc" hits >/dev/null; then
    acked=$((acked + 1))
  fi
  echo "round $r: node $victim crashed and came back; $acked increments acknowledged"
done

lattice testnet wait-converged "$doc" --timeout 120
for ((i = 0; i < n; i++)); do
  got=$(lattice testnet exec "$i" -- doc get "$doc" hits)
  if [[ "$got" != "$acked" ]]; then
    echo "FAILED: node $i counts $got, expected $acked" >&2
    exit 1
  fi
done
echo "all $n nodes count $acked"
