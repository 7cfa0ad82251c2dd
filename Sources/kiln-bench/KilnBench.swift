import ArgumentParser

/// `kiln-bench`: the benchmarks behind the figures in the README. Each prints a table that sets
/// Kiln beside a peer measured in the same run.
@main
struct KilnBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "kiln-bench",
        abstract: "Benchmarks for Kiln's hot paths, each beside a peer in the same run.",
        subcommands: [WireBenchmark.self, AMQPBenchmark.self, VMBenchmark.self, E2EBenchmark.self, PythonBenchmark.self, ClientBenchmark.self, PredictBenchmark.self, PlacementBenchmark.self, PoolSizingBenchmark.self, SoakBenchmark.self, FleetBenchmark.self, DashboardBenchmark.self, ExitProbe.self]
    )
}
