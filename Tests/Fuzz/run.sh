#!/usr/bin/env bash
# Builds the KilnWire decoder fuzzer (libFuzzer + AddressSanitizer) and runs it for N seconds
# (default 60), seeded with the golden vectors. Crashes land in .local/fuzz/crashes; turn each
# into a regression test in Tests/KilnWireTests/FuzzRegressionTests.swift.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$root"
seconds=${1:-60}
out=.local/fuzz
mkdir -p "$out/corpus" "$out/crashes"
cp schemas/vectors/*.msgpack schemas/vectors/invalid/*.msgpack "$out/corpus/"

swiftc -O -sanitize=fuzzer,address -parse-as-library -module-name KilnWireFuzz \
    -I Sources/CMsgPack Sources/KilnWire/*.swift Tests/Fuzz/DecoderFuzzer.swift \
    -lmsgpackc -o "$out/kiln-wire-fuzz"

"$out/kiln-wire-fuzz" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -max_len=65536 \
    -artifact_prefix="$out/crashes/" -print_final_stats=1 "$out/corpus"
