# Kiln's two commands are `make demo` and `make test`; the rest are for developers.
SWIFT ?= swift
FUZZ_SECONDS ?= 60

.PHONY: test demo deps build release bench-wire bench-amqp bench-vm bench-e2e bench-python bench-client bench-predict bench-fleet bench-peers guest-binaries image fuzz broker-start broker-stop vectors clean

test:
	Tests/run-all.sh

# Installs what is missing, builds, prepares the guest image, starts a local broker, runs the
# demo (a worker, sample invocations, results and telemetry), and stops the broker again.
demo: image
	deploy/local/rabbitmq.sh start
	.build/debug/kiln demo; status=$$?; deploy/local/rabbitmq.sh stop; exit $$status

deps:
	deploy/local/install-deps.sh

build: deps
	$(SWIFT) build

release: deps
	$(SWIFT) build -c release

bench-wire: release
	.build/release/kiln-bench wire

# Starts the broker if it is not running; pika is the peer.
bench-amqp: release bench-peers
	deploy/local/rabbitmq.sh start
	.build/release/kiln-bench amqp

# The guest agent, built for the guest image with the Swift stdlib linked statically (glibc and
# libstdc++ are copied into the image from ldd). The method programs are not built here: the
# manifest names them as `swift:<product>` and `kiln image build` compiles them fully static in
# .build-guest/methods (their own folder, so that the flags do not rebuild each other).
guest-binaries: deps
	$(SWIFT) build -c release --scratch-path .build-guest/agent --static-swift-stdlib --product kiln-agent

# The guest image for examples/methods.json, cached by content in .local/images/<sha256>;
# .local/images/current points at it (tests and benchmarks use that).
image: guest-binaries
	$(SWIFT) build --product kiln
	.build/debug/kiln image build --agent .build-guest/agent/release/kiln-agent --manifest examples/methods.json --link current
	.build/debug/kiln image prune --keep current

bench-vm: release image
	.build/release/kiln-bench vm

# The benchmarks' Python peers (pika, Celery) in .local/venv.
bench-peers:
	Tests/interop/venv.sh >/dev/null
	.local/venv/bin/pip install -q --disable-pip-version-check -r Benchmarks/requirements.txt
	.local/venv/bin/pip install -q --disable-pip-version-check --no-deps ./sdk/python

# A worker (release build) on the local broker, beside Celery and a VM booted per invocation.
bench-e2e: release image bench-peers
	deploy/local/rabbitmq.sh start
	.build/release/kiln-bench e2e

# The Python producer client: its cost over raw pika, map against a raw burst, Celery beside.
bench-client: release image bench-peers
	deploy/local/rabbitmq.sh start
	.build/release/kiln-bench client

# The example Python methods against Celery running the same functions, cold starts, memory.
bench-python: release image bench-peers
	deploy/local/rabbitmq.sh start
	.build/release/kiln-bench python

# Three workers as a fleet: cross-host affinity's warm hits, and 1-3 workers on a 3-node cluster
# (started and stopped here) against 3 on one node, with the brokers' CPU per invocation.
bench-fleet: release image
	deploy/local/rabbitmq.sh start
	.build/release/kiln-bench fleet

# The latency model scored live: a worker (release build) on the local broker under a mixed,
# varied workload; every prediction made at placement against what the invocation took.
bench-predict: release image
	deploy/local/rabbitmq.sh start
	.build/release/kiln-bench predict

fuzz: deps
	Tests/Fuzz/run.sh $(FUZZ_SECONDS)

broker-start:
	deploy/local/rabbitmq.sh start

broker-stop:
	deploy/local/rabbitmq.sh stop

# Rewrites schemas/vectors/*.msgpack from their JSON twins with Python's msgpack library.
vectors:
	Tests/interop/venv.sh >/dev/null
	cd schemas/vectors && ../../.local/venv/bin/python generate.py

clean:
	rm -rf .build .build-guest .local/fuzz .local/interop-out .local/images
