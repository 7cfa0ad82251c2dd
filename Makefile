# Kiln's two commands are `make demo` and `make test`; the rest are for developers.
SWIFT ?= swift
FUZZ_SECONDS ?= 60

.PHONY: test demo build release bench-wire fuzz broker-start broker-stop vectors clean

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
