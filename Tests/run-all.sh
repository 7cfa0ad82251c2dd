#!/usr/bin/env bash
# What `make test` runs: the Swift tests and the Python interop tests against a real RabbitMQ
# that this script starts on 127.0.0.1 and always stops again, even when tests fail.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

deploy/local/install-deps.sh
Tests/interop/venv.sh >/dev/null
# The Python producer client, installed as a user installs it (its tests call a real worker).
.local/venv/bin/pip install -q --disable-pip-version-check --no-deps ./sdk/python

# The broker also listens for TLS, with certificates made here (the TLS tests use them).
export KILN_RABBITMQ_TLS_DIR=$root/.local/test-tls
deploy/local/tls-certs.sh "$KILN_RABBITMQ_TLS_DIR"
deploy/local/rabbitmq.sh start
trap 'deploy/local/rabbitmq.sh stop' EXIT

export KILN_AMQP_URL=${KILN_AMQP_URL:-$(deploy/local/rabbitmq.sh url)}
export KILN_AMQP_TLS_URL=${KILN_AMQP_TLS_URL:-$(deploy/local/rabbitmq.sh tls-url)}
export KILN_TEST_TLS_DIR=$KILN_RABBITMQ_TLS_DIR
export KILN_INTEROP_OUT=$root/.local/interop-out
export KILN_INTEROP_PYTHON=$root/.local/venv/bin/python
rm -rf "$KILN_INTEROP_OUT"
mkdir -p "$KILN_INTEROP_OUT"

# The guest image the VM tests boot (built once, then found in the cache by content).
make --no-print-directory image

swift build --build-tests
# Two cores run VMs under TCG: tests beyond a few at once only make each wait out its
# timeouts. The width is the number of tests Swift Testing runs at the same time.
export SWT_EXPERIMENTAL_MAXIMUM_PARALLELIZATION_WIDTH=${SWT_EXPERIMENTAL_MAXIMUM_PARALLELIZATION_WIDTH:-4}
# Run alone, after the rest: the adaptive-allocation test times work under a CPU quota (on a
# 2-core host saturated by parallel VM tests a raised quota buys nothing measurable), and the
# fleet fault tests run three brokers, three workers and 10,000 invocations, which would starve
# the VM tests' guests beside them.
swift test --skip-build --skip AdaptiveAllocatorTests --skip FleetFaultTests
swift test --skip-build --filter AdaptiveAllocatorTests
swift test --skip-build --filter FleetFaultTests
.local/venv/bin/python -m pytest -q Tests/interop
