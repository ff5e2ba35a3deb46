#!/usr/bin/env bash
# A Python virtualenv with what the quickstart's scripts need (examples/quickstart/
# requirements.txt), cached outside the checkout and rebuilt only when the requirements change.
# Prints the virtualenv's folder.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
req="$root/examples/quickstart/requirements.txt"
venv="${ATRIUM_CACHE:-$HOME/.cache/atrium}/venv-quickstart"
if ! cmp -s "$req" "$venv/requirements.txt" 2>/dev/null; then
  echo "python: installing $(grep -v '^#' "$req" | xargs) into $venv (once)" >&2
  rm -rf "$venv"
  python3 -m venv "$venv" >&2 || { (apt-get update -qq && apt-get install -y -qq python3-venv) >&2; python3 -m venv "$venv" >&2; }
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$req" >&2
  cp "$req" "$venv/requirements.txt"
fi
echo "$venv"
