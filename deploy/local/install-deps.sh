#!/usr/bin/env bash
# Installs the Debian packages Kiln builds, tests and runs with, when they are missing.
# Needs root (or sudo) only when something is missing.
set -euo pipefail

packages=(
    pkg-config
    librabbitmq-dev   # rabbitmq-c 0.11: the AMQP client
    libsqlite3-dev    # SQLite: the execution history (GRDB)
    libmsgpack-dev    # msgpack-c 4.0: the MessagePack codec
    rabbitmq-server   # the broker for tests and the demo
    qemu-system-x86   # QEMU microvm: the qemu backend
    busybox-static    # the guest image's userland
    xz-utils          # vmlinux is extracted from the xz payload of vmlinuz
    cpio              # checks the initramfs writer in the unit tests
    python3-venv      # the venv of the Python interop peers (pika, msgpack, jsonschema)
    iproute2          # ss: the broker script checks that its port is free
    procps            # ps, pgrep: the broker script and the tests find processes by PID
    openssl           # the TLS tests' certificates (deploy/local/tls-certs.sh)
    erofs-utils       # mkfs.erofs: method root file systems, packed read-only
    mmdebstrap        # root file systems from Debian package lists (the Python examples)
    prometheus        # promtool: checks and unit-tests deploy/prometheus/kiln-rules.yml
    chromium          # headless: the dashboard's browser test
)

missing=()
for package in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done

sudo=""
[[ $(id -u) == 0 ]] || sudo="sudo"
export DEBIAN_FRONTEND=noninteractive
updated=""
if [[ ${#missing[@]} -gt 0 ]]; then
    echo "install-deps: installing ${missing[*]}" >&2
    # The package lists of a fresh machine may be empty or stale.
    $sudo apt-get update -qq
    updated=1
    $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# The guest image takes its kernel with `apt-get download` of what linux-image-amd64 depends
# on: the package lists must know it (and its exact version moves with point releases).
if ! apt-cache depends linux-image-amd64 2>/dev/null | grep -q "Depends: linux-image-"; then
    if [[ -z $updated ]]; then
        echo "install-deps: updating the package lists (the guest kernel package is unknown)" >&2
        $sudo apt-get update -qq
    fi
fi
