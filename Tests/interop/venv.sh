#!/usr/bin/env bash
# Creates .local/venv with the independent Python peers the interop tests use, once.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
venv=$root/.local/venv
requirements=$root/Tests/interop/requirements.txt
stamp=$venv/.requirements
if [[ -x $venv/bin/python ]] && cmp -s "$requirements" "$stamp"; then
    echo "$venv"
    exit 0
fi
python3 -m venv "$venv"
"$venv/bin/pip" install -q --disable-pip-version-check -r "$requirements"
cp "$requirements" "$stamp"
echo "$venv"
