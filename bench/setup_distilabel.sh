#!/usr/bin/env bash
# distilabel is the peer we measure against, not a dependency: it gets its own venv.
set -euo pipefail
cd "$(dirname "$0")"
python -m venv .venv-distilabel
.venv-distilabel/bin/pip install -q distilabel openai requests
