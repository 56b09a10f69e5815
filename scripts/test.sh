#!/usr/bin/env bash
# The whole test suite: lint, the held-out NLU score, then pytest against a real Rasa server,
# action server, redis-server, PostgreSQL and Debian chromium, all started here on loopback.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh

need=()
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
[ -x /usr/bin/chromium ] || need+=(chromium)
compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || need+=(postgresql)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then echo "error: install ${need[*]} (Debian packages) or run as root" >&2; exit 1; fi
  echo "==> installing ${need[*]}"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi

echo "==> ruff"
.venv/bin/ruff check common storage gateway channels handoff profiles bot tests bench scripts

echo "==> lint-imports (the dependency rule, docs/architecture.md)"
.venv/bin/lint-imports

echo "==> model and held-out NLU score"
.venv/bin/hotline train
.venv/bin/hotline nlu-eval --min-f1 "${HOTLINE_MIN_F1:-0.85}"

# A random order every run (pytest-randomly); the seed is printed so a failure can be replayed.
seed="${HOTLINE_TEST_SEED:-$(( (RANDOM << 15) | RANDOM ))}"
echo "==> pytest (random order, seed $seed: HOTLINE_TEST_SEED=$seed replays it)"
exec .venv/bin/python -m pytest -q -p no:cacheprovider -p randomly --randomly-seed="$seed" "$@"
