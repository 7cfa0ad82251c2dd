// libFuzzer target for the method manifest loader, built by Tests/Fuzz/run.sh with the
// manifest's sources and KilnWire in one module. Any crash, hang or leak is a bug: the loader
// must answer every input with a manifest or a VMError.

import Foundation

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzManifest(_ data: UnsafePointer<UInt8>, _ count: Int) -> Int32 {
    let bytes = Data(bytes: data, count: count)
    if let manifest = try? MethodManifest.parse(bytes, path: "fuzz") {
        // What loads must validate again, and name an entry for every method.
        guard (try? manifest.validate(path: "fuzz")) != nil, manifest.methods.keys.allSatisfy({ manifest.guestEntry(for: $0) != nil }) else {
            fatalError("a manifest that loaded does not validate")
        }
    }
    return 0
}

/// The loader's file reading is not fuzzed (the fuzzer hands it bytes).
func readFile(_ path: String) -> [UInt8]? { nil }
