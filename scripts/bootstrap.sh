#!/usr/bin/env bash
# Create (or refresh) the two virtualenvs: .venv for the gateway (current Python, current
# libraries) and .venv-bot for Rasa (Python 3.10, Rasa's pins). Re-runs only what changed.
set -euo pipefail
cd "$(dirname "$0")/.."

is_py() { # is_py CMD MAJOR.MINOR-test: prints CMD's path when its version satisfies the test
  local cmd=$1 test=$2
  command -v "$cmd" >/dev/null 2>&1 || [ -x "$cmd" ] || return 1
  "$cmd" -c "import sys; v=sys.version_info[:2]; sys.exit(0 if $test else 1)" >/dev/null 2>&1 || return 1
  "$cmd" -c 'import sys; print(sys.executable)'
}

find_py310() {
  local c
  for c in ${HOTLINE_PYTHON310:-} python3.10 /usr/bin/python3.10 /usr/local/bin/python3.10; do
    is_py "$c" "v == (3, 10)" && return 0
  done
  for c in "$(pyenv root 2>/dev/null || echo "$HOME/.pyenv")"/versions/3.10*/bin/python3.10; do
    is_py "$c" "v == (3, 10)" && return 0
  done
  return 1
}

find_py_gateway() {
  local c
  for c in ${HOTLINE_PYTHON:-} python3 python3.13 python3.12 python3.11; do
    is_py "$c" "v >= (3, 11)" && return 0
  done
  return 1
}

stamp() { sha256sum "$@" | sha256sum | cut -c1-16; }

PY=$(find_py_gateway) || { echo "error: the gateway needs Python >= 3.11 (set HOTLINE_PYTHON)" >&2; exit 1; }
want=$(stamp pyproject.toml)
if [ "$(cat .venv/.stamp 2>/dev/null)" != "$want" ]; then
  echo "==> gateway venv (.venv) with $PY"
  [ -x .venv/bin/python ] || "$PY" -m venv .venv
  .venv/bin/pip install -q --upgrade pip
  .venv/bin/pip install -q -e ".[dev]"
  echo "$want" > .venv/.stamp
fi

# The console's chart library (ECharts), pinned in package-lock.json and served from node_modules: no CDN.
want=$(stamp package-lock.json)
if [ "$(cat node_modules/.stamp 2>/dev/null)" != "$want" ]; then
  if ! command -v npm >/dev/null 2>&1; then
    [ "$(id -u)" = 0 ] || { echo "error: npm is needed for the console's charts (apt install npm)" >&2; exit 1; }
    echo "==> installing npm (Debian package)"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq npm >/dev/null
  fi
  echo "==> console libraries (npm ci)"
  npm ci --no-audit --no-fund --silent
  echo "$want" > node_modules/.stamp
fi

PY310=$(find_py310) || {
  echo "error: the bot needs Python 3.10 (Rasa 3.6 supports 3.8-3.10) and none was found." >&2
  echo "       Install it (e.g. 'pyenv install 3.10') or set HOTLINE_PYTHON310=/path/to/python3.10." >&2
  exit 1
}
want=$(stamp bot/requirements.txt)
if [ "$(cat .venv-bot/.stamp 2>/dev/null)" != "$want" ]; then
  echo "==> bot venv (.venv-bot) with $PY310 (Rasa and TensorFlow: a few minutes the first time)"
  [ -x .venv-bot/bin/python ] || "$PY310" -m venv .venv-bot
  .venv-bot/bin/pip install -q --upgrade pip
  .venv-bot/bin/pip install -q -r bot/requirements.txt
  echo "$want" > .venv-bot/.stamp
fi
