import ArgumentParser
import Foundation
import KilnWorker
import Logging
import Metrics
import Prometheus

/// `kiln worker`: consume invocations and run them in micro-VMs until SIGTERM.
struct WorkerCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "worker",
        abstract: "Run a worker: consume invocations, run them in pooled micro-VMs, publish results.",
        discussion: "SIGTERM or SIGINT drains: no new invocations, those in flight finish, then the VMs are destroyed.")

    @OptionGroup var settings: ConfigurationOptions

    func run() async throws {
        Kiln.bootstrapLogging(defaultLevel: .info)
        let logger = Logger(label: "kiln.worker")
        let configuration = try settings.load()

        // The Prometheus backend for swift-metrics, with buckets for micro- to multi-second latencies.
        let registry = PrometheusCollectorRegistry()
        var factory = PrometheusMetricsFactory(registry: registry)
        factory.defaultDurationHistogramBuckets = [
            .microseconds(250), .microseconds(500), .milliseconds(1), .milliseconds(2), .milliseconds(5), .milliseconds(10),
            .milliseconds(25), .milliseconds(50), .milliseconds(100), .milliseconds(250), .milliseconds(500), .seconds(1),
            .milliseconds(2_500), .seconds(5), .seconds(10), .seconds(30),
        ]
        // A VM lives from seconds (`max_uses`) to a day.
        factory.durationHistogramBuckets[KilnMetric.vmLifetimeSeconds.rawValue] = [
            .seconds(1), .seconds(10), .seconds(60), .seconds(300), .seconds(900), .seconds(3_600), .seconds(14_400), .seconds(86_400),
        ]
        MetricsSystem.bootstrap(factory)

        let worker = Worker(
            configuration: configuration,
            extraRoutes: ["/metrics": { .init(contentType: "text/plain; version=0.0.4", body: registry.emitToBuffer()) }],
            logger: logger)
        try await worker.run()
    }
}
