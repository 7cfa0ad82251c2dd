import ArgumentParser
import Foundation

/// What the benchmarks that run a real worker share: the broker, the kiln binary the worker runs
/// from, and the image cache whose `current` image it runs.
struct WorkerBenchOptions: ParsableArguments {
    @Option(help: "The broker (`make broker-start` runs one on 127.0.0.1).")
    var url = "amqp://guest:guest@127.0.0.1:5672/%2f"

    @Option(help: "The kiln executable the worker runs from (a release build).")
    var kiln = ".build/release/kiln"

    @Option(help: "The image cache; the worker uses its `current` image.")
    var imageCache = ".local/images"

    /// The worker configuration's `vm` section for `backend`.
    func vmSection(backend: String) -> String {
        #"vm: {backend: \#(backend), image_cache: "\#(imageCache)"}"#
    }

    /// Throws unless the kiln executable is there.
    func requireKiln() throws {
        guard FileManager.default.isExecutableFile(atPath: kiln) else {
            throw BenchmarkError("no kiln executable at \(kiln): run `swift build -c release --product kiln`")
        }
    }
}
