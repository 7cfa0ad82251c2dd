# Kiln's two commands are `make demo` and `make test`; the rest are for developers.
SWIFT ?= swift
FUZZ_SECONDS ?= 60

.PHONY: test demo build release bench-wire bench-amqp fuzz broker-start broker-stop vectors clean

test:
	Tests/run-all.sh

demo:
	@echo "make demo arrives with the worker (issue 5): today Kiln has its wire format only."
	@echo "Try: make test, make bench-wire"

build:
	deploy/local/install-deps.sh
	$(SWIFT) build

release:
	deploy/local/install-deps.sh
	$(SWIFT) build -c release

bench-wire: release
	.build/release/kiln-bench wire

# Needs the broker (make broker-start) and the Python peers (Tests/interop/venv.sh).
bench-amqp: release
	Tests/interop/venv.sh >/dev/null
	deploy/local/rabbitmq.sh start
	.build/release/kiln-bench amqp

fuzz:
	deploy/local/install-deps.sh
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
	rm -rf .build .local/fuzz .local/interop-out
