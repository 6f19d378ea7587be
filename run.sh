#!/usr/bin/env bash
# The two commands of the README, on a fresh machine or an old one:
#   ./run.sh demo [app.py options]   set up, then serve the demo (http://127.0.0.1:7860)
#   ./run.sh test [pytest options]   set up with the test tools, then lint and run the tests
# Set-up: the active virtualenv if there is one, else ./.venv (created with $PYTHON, default
# python3; Python 3.10 or newer); the install is skipped when requirements and pyproject are unchanged.
set -euo pipefail
cd "$(dirname "$0")"

what=${1:-}
case "$what" in
  demo) requirements=requirements.txt ;;
  test) requirements=requirements-dev.txt ;;
  *) echo "usage: ./run.sh demo [app.py options] | ./run.sh test [pytest options]" >&2; exit 2 ;;
esac
shift

if [ -z "${VIRTUAL_ENV:-}" ]; then
  if [ ! -x .venv/bin/python ]; then
    "${PYTHON:-python3}" -m venv .venv
  fi
  # shellcheck disable=SC1091
  source .venv/bin/activate
fi

stamp="$VIRTUAL_ENV/.glance-focus-$what-installed"
digest=$(cat requirements.txt "$requirements" pyproject.toml | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$digest" ]; then
  python -m pip install -q --upgrade pip
  python -m pip install -q -r "$requirements" -e .
  echo "$digest" > "$stamp"
fi

export GRADIO_ANALYTICS_ENABLED=False HF_HUB_DISABLE_TELEMETRY=1
if [ "$what" = demo ]; then
  exec python app.py "$@"
fi
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
python -m ruff check .
python -m ruff format --check .
exec python -m pytest -q "$@"
