#!/usr/bin/env bash
# Three local nodes share a document: create it on one, join it on the others, write
# everywhere, and wait until every node holds the same content.
#
#   bash testnet/examples/quickstart.sh            # uses `lattice` on PATH
#   LATTICE=target/release/lattice bash testnet/examples/quickstart.sh
set -euo pipefail
lattice() { "${LATTICE:-lattice}" "$@"; }

export LATTICE_TESTNET=${LATTICE_TESTNET:-$(mktemp -d)}
trap 'lattice testnet down >/dev/null 2>&1 || true' EXIT

lattice testnet up -n 3
doc=$(lattice testnet exec 0 -- doc create groceries --open --json | grep '"doc"' | cut -d'"' -f4)
echo "created document $doc"
for i in 1 2; do lattice testnet exec "$i" -- doc join "$doc"; done

lattice testnet exec 0 -- doc add groceries items milk bread
lattice testnet exec 1 -- doc add groceries items eggs
lattice testnet exec 2 -- doc incr groceries trips
lattice testnet exec 1 -- doc set groceries shop '"corner store"'

lattice testnet wait-converged groceries --timeout 30
for i in 0 1 2; do
  echo "node $i:"
  lattice testnet exec "$i" -- doc get groceries
done
