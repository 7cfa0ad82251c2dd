#!/usr/bin/env bash
# Builds the fuzzers (libFuzzer + AddressSanitizer) and runs each for N seconds (default 60):
# the KilnWire decoders (bodies, results, telemetry, guest frames as the agent and the host read
# them, serve-mode frames), seeded with the golden vectors; and the method manifest loader,
# seeded with the example manifests. Crashes land in .local/fuzz/<target>/crashes; turn each
# into a regression test.
#
#   Tests/Fuzz/run.sh [SECONDS] [decoders|manifest|all]
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$root"
seconds=${1:-60}
which=${2:-all}
base=.local/fuzz

fuzz() { # name binary corpus max_len
    local out=$base/$1
    "$2" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -max_len="$4" \
        -artifact_prefix="$out/crashes/" -print_final_stats=1 "$3"
}

if [[ $which == all || $which == decoders ]]; then
    out=$base/decoders
    mkdir -p "$out/corpus" "$out/crashes"
    cp schemas/vectors/*.msgpack schemas/vectors/invalid/*.msgpack "$out/corpus/"
    swiftc -O -sanitize=fuzzer,address -parse-as-library -module-name KilnWireFuzz \
        -I Sources/CMsgPack Sources/KilnWire/*.swift Tests/Fuzz/DecoderFuzzer.swift \
        -lmsgpackc -o "$out/kiln-wire-fuzz"
    fuzz decoders "$out/kiln-wire-fuzz" "$out/corpus" 65536
fi

if [[ $which == all || $which == manifest ]]; then
    out=$base/manifest
    mkdir -p "$out/corpus" "$out/crashes" "$out/src"
    cp examples/methods.json "$out/corpus/"
    # The manifest's sources join KilnWire in one module: their `import KilnWire` goes.
    for file in Sources/KilnVM/Image/MethodManifest.swift Sources/KilnVM/VMError.swift Sources/KilnVM/MicroVM.swift; do
        sed '/^import KilnWire$/d' "$file" >"$out/src/$(basename "$file")"
    done
    swiftc -O -sanitize=fuzzer,address -parse-as-library -module-name KilnManifestFuzz \
        -I Sources/CMsgPack Sources/KilnWire/*.swift "$out"/src/*.swift Tests/Fuzz/ManifestFuzzer.swift \
        -lmsgpackc -o "$out/kiln-manifest-fuzz"
    fuzz manifest "$out/kiln-manifest-fuzz" "$out/corpus" 16384
fi
