#!/usr/bin/env bash
# Installs the Debian packages Kiln builds, tests and runs with, when they are missing.
# Needs root (or sudo) only when something is missing.
set -euo pipefail

packages=(
    pkg-config
    librabbitmq-dev   # rabbitmq-c 0.11: the AMQP client
    libmsgpack-dev    # msgpack-c 4.0: the MessagePack codec
    rabbitmq-server   # the broker for tests and the demo
)

missing=()
for package in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
[[ ${#missing[@]} -eq 0 ]] && exit 0

echo "install-deps: installing ${missing[*]}" >&2
sudo=""
[[ $(id -u) == 0 ]] || sudo="sudo"
export DEBIAN_FRONTEND=noninteractive
# The package lists of a fresh machine may be empty or stale.
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
