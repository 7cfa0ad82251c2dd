import Foundation
import KilnAMQP
import KilnPool
import KilnPredict
import KilnVM
import KilnWire
import Logging
import ServiceLifecycle
import Synchronization

/// A Kiln worker: consumes invocations, runs them in pooled micro-VMs, publishes results and
/// telemetry. ``run()`` assembles the parts from the configuration, runs them as a
/// `ServiceGroup` until SIGTERM or SIGINT, then drains: no new invocations, those in flight
/// finish, telemetry is flushed, every VM is destroyed, the connections close.
public struct Worker: Sendable {
    public let configuration: WorkerConfiguration
    /// Extra routes of the status server (the executable adds `/metrics`).
    public let extraRoutes: [String: StatusServer.Route]
    let logger: Logger

    public init(configuration: WorkerConfiguration, extraRoutes: [String: StatusServer.Route] = [:], logger: Logger) {
        self.configuration = configuration
        self.extraRoutes = extraRoutes
        self.logger = logger
    }

    /// The names a worker goes by.
    public var identity: (host: String, worker: String) {
        let host = configuration.worker.host.isEmpty
            ? (ProcessInfo.processInfo.hostName.split(separator: ".").first.map(String.init) ?? "localhost")
            : configuration.worker.host
        let worker = configuration.worker.name.isEmpty ? "\(host)-\(getpid())" : configuration.worker.name
        return (host, worker)
    }

    /// Runs until a shutdown signal, then drains and cleans up.
    public func run() async throws {
        let (hostName, workerName) = identity
        let names = KilnNames(prefix: configuration.amqp.prefix)
        let image = try GuestImage.open(directory: configuration.vm.imagePath)
        let driver = try await makeDriver(image: image)
        let backend = await driver.backend
        logger.info("worker \(workerName) on \(hostName): backend \(backend), isolation: \(backend.isolation), image \(image.id.prefix(12))")

        let consumer = AMQPConnection(endpoints: try amqpEndpoints("\(workerName) invocations"), logger: logger)
        let publisher = AMQPConnection(
            endpoints: try amqpEndpoints("\(workerName) results"), publishWindow: configuration.amqp.publishWindow, logger: logger)
        try await consumer.connect()
        try await publisher.connect()
        let topology = AMQPTopology.kiln(names, deliveryLimit: configuration.amqp.deliveryLimit)
        try await consumer.declare(topology)

        let telemetry = TelemetryPublisher(connection: publisher, exchange: names.telemetryExchange, host: hostName, worker: workerName, logger: logger)
        let metrics = WorkerMetrics(telemetry: telemetry.sink)
        WorkerMetrics.registerWorkerInfo(host: hostName, worker: workerName, backend: backend.name)
        let (scorer, recorder) = try openHistoryAndModel()
        WorkerMetrics.registerModelMetrics()
        let profiles = configuration.profiles.map { name, profile in
            PoolProfile(vm: VMProfile(name: name, vcpus: profile.vcpus, memoryMB: profile.memoryMB,
                                      memoryCeilingMB: profile.maxMemoryMB > 0 ? profile.maxMemoryMB : nil), minIdle: profile.minIdle,
                        maxIdle: profile.maxIdle, maxTotal: profile.maxTotal, cpuShare: profile.cpuShare > 0 ? profile.cpuShare : nil)
        }
        let adaptive = configuration.adaptive
        let allocator = adaptive.enabled ? AdaptiveAllocator(policy: AllocationPolicy(
            degradationRatio: adaptive.degradationRatio, sustained: adaptive.sustained, cpuStep: adaptive.cpuStep,
            maximumCPUs: adaptive.maxCPUs > 0 ? adaptive.maxCPUs : Double(ProcessInfo.processInfo.activeProcessorCount),
            relaxAfter: .milliseconds(Int64(adaptive.relaxAfterSeconds * 1_000))), observer: metrics, logger: logger) : nil
        let hostSamples = HostSampleBox()
        let pool = VMPool(
            driver: driver, backend: backend, profiles: profiles,
            sizer: PoolSizer(limits: PoolLimits(
                memoryReserveMB: configuration.pool.memoryReserveMB, cpuReserveCores: configuration.pool.cpuReserveCores,
                // A VM may come to hold its profile's ceiling.
                memoryPerVMMB: (profiles.map(\.vm.bootMemoryMB).max() ?? 128) + (backend.name == "qemu" ? 64 : 0),
                saturatedBusyLimit: configuration.pool.saturatedBusyLimit > 0
                    ? configuration.pool.saturatedBusyLimit : ProcessInfo.processInfo.activeProcessorCount)),
            demandWindow: .milliseconds(Int64(configuration.pool.demandWindowSeconds * 1_000)),
            idleTTL: .milliseconds(Int64(configuration.lifecycle.idleTTLSeconds * 1_000)),
            provisionConcurrency: configuration.pool.provisionConcurrency, allocator: allocator,
            host: { hostSamples.latest }, observer: WorkerPoolObserver(metrics: metrics, predictor: scorer.predictor), logger: logger)
        let monitor = HostMonitor(logger: logger) { sample in
            hostSamples.latest = sample
            Task {
                metrics.hostSampled(sample, backend: backend.name, pools: await pool.status())
            }
        }
        hostSamples.latest = monitor.latest

        let catalog = MethodCatalog(manifest: image.manifest, profiles: profiles) { method, entry in
            let policy = configuration.methodLifecycles[method] ?? configuration.lifecycle
            return LifecyclePolicy(
                maxUses: policy.maxUses, idleTTL: .milliseconds(Int64(policy.idleTTLSeconds * 1_000)), freshVM: entry.lifecycle == .fresh,
                destroyOnError: policy.destroyOnError, destroyOnCrash: policy.destroyOnCrash)
        }
        for (method, reason) in catalog.unplaceable { logger.warning("method \(method) cannot run here: \(reason)") }
        let pipeline = InvocationPipeline(
            settings: .init(
                names: names, worker: workerName, host: hostName,
                decoder: MessagePackDecoder(limits: WireLimits(maxBodyBytes: configuration.limits.maxBodyBytes, maxDepth: configuration.limits.maxDepth)),
                localQueue: configuration.limits.localQueue, maxDeadlineMs: configuration.limits.maxDeadlineMs,
                batchCalls: configuration.pool.batchCalls, batchWindowMs: configuration.pool.batchWindowMs),
            catalog: catalog, pool: pool, publisher: publisher, scorer: scorer, backend: backend.name, metrics: metrics,
            history: recorder, affinityExchange: configuration.affinity.crossHost ? names.affinityExchange : nil, logger: logger)
        let prefetch = configuration.amqp.prefetch > 0
            ? UInt16(configuration.amqp.prefetch) : UInt16(clamping: max(1, await pool.capacity * 2))

        // The pool first: services stop in reverse order, and it destroys the VMs when the
        // invocations that use them have finished.
        var services: [any Service] = [pool, monitor, PoolMaintainer(pool: pool, interval: .milliseconds(Int64(configuration.pool.sizingIntervalSeconds * 1_000))), telemetry]
        if let recorder { services.append(recorder) }
        if let address = HostAndPort(configuration.metrics.listen), !configuration.metrics.listen.isEmpty {
            services.append(StatusServer(
                address: address, routes: statusRoutes(pool: pool, consumer: consumer, catalog: catalog, predictor: scorer.predictor), logger: logger))
        }
        services.append(InvocationConsumer(connection: consumer, queue: names.invocationsQueue, prefetch: prefetch, pipeline: pipeline, logger: logger))
        let affinityConsumer = try await crossHostAffinityConsumer(names: names, host: hostName, workerName: workerName, prefetch: prefetch, pipeline: pipeline)
        if let affinityConsumer { services.append(affinityConsumer.service) }

        let group = ServiceGroup(configuration: .init(
            services: services.map { .init(service: $0) }, gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
        logger.info("ready: methods \(catalog.names.joined(separator: ", ")); prefetch \(prefetch)")
        do {
            try await group.run()
        } catch {
            logger.error("worker stopped: \(error)")
        }
        logger.info("destroying VMs and closing connections")
        await pool.shutdown()
        await consumer.close(grace: .seconds(2))
        await affinityConsumer?.connection.close(grace: .seconds(2))
        await publisher.close(grace: .seconds(5))
    }

    /// With `affinity.cross_host`: the worker's own queue bound to the consistent-hash exchange,
    /// declared and consumed on a connection of its own (one consumer per connection). Its binding
    /// stays when the worker stops, so that a restarted worker finds its keys again; what waits in
    /// it meanwhile goes back to the shared queue after `affinity.hold_ms`.
    private func crossHostAffinityConsumer(
        names: KilnNames, host: String, workerName: String, prefetch: UInt16, pipeline: InvocationPipeline
    ) async throws -> (connection: AMQPConnection, service: InvocationConsumer)? {
        guard configuration.affinity.crossHost else { return nil }
        let connection = AMQPConnection(endpoints: try amqpEndpoints("\(workerName) affinity"), logger: logger)
        try await connection.connect()
        do {
            try await connection.declare(AMQPTopology.crossHostAffinity(
                names, host: host, holdMs: configuration.affinity.holdMs, deliveryLimit: configuration.amqp.deliveryLimit))
        } catch AMQPError.connectionClosed(503, let text) where text.contains("x-consistent-hash") {
            await connection.close(grace: .zero)
            throw ConfigurationError(
                field: "affinity.cross_host",
                problem: "the broker has no consistent-hash exchange: enable it with `rabbitmq-plugins enable rabbitmq_consistent_hash_exchange` (\(text))")
        }
        let queue = names.workerQueue(host: host)
        logger.info("cross-host affinity: keyed invocations without a warm VM here go to \(names.affinityExchange); this worker's share arrives in \(queue)")
        return (connection, InvocationConsumer(connection: connection, queue: queue, prefetch: prefetch, pipeline: pipeline, logger: logger))
    }

    /// The latency model, trained from the history when there is one, in the scorer that places
    /// invocations; and the recorder that keeps the history growing.
    private func openHistoryAndModel() throws -> (SuitabilityScorer, HistoryRecorder?) {
        let baseline = EWMAPredictor()
        let predictor: any LatencyPredictor = configuration.predict.model == .ewma
            ? baseline : LearnedPredictor(fallback: baseline, onRejection: WorkerMetrics.modelRejectedUpdate)
        let scorer = SuitabilityScorer(predictor: predictor, baseline: baseline)
        guard !configuration.history.path.isEmpty else { return (scorer, nil) }
        let history = try ExecutionHistory(path: configuration.history.path, retention: HistoryRetention(
            maxRecords: configuration.history.maxRecords, maxAge: .seconds(Int64(configuration.history.maxAgeDays * 86_400))))
        if configuration.predict.trainAtStart {
            let started = ContinuousClock.now
            let replay = try HistoryReplay.replay(history, into: predictor)
            if replay.replayed + replay.otherSchema + replay.notFinite > 0 {
                logger.info("trained the \(predictor.name) model from \(configuration.history.path) in \((ContinuousClock.now - started).text): \(replay.description)")
            }
        }
        return (scorer, HistoryRecorder(history: history, logger: logger))
    }

    /// The broker's nodes (one URL, or a cluster's separated by commas), named and with the
    /// configured heartbeat.
    private func amqpEndpoints(_ name: String) throws -> [AMQPConfiguration] {
        try AMQPConfiguration.endpoints(configuration.amqp.url).map { endpoint in
            var amqp = endpoint
            amqp.connectionName = "kiln-worker \(name)"
            amqp.heartbeat = .seconds(configuration.amqp.heartbeatSeconds)
            return amqp
        }
    }

    /// The driver for the configured backend; `auto` takes qemu when QEMU is installed.
    private func makeDriver(image: GuestImage) async throws -> any MicroVMDriver {
        let qemuInstalled = FileManager.default.isExecutableFile(atPath: "/usr/bin/qemu-system-x86_64")
        switch configuration.vm.backend {
        case .process:
            return try ProcessSandboxDriver(image: image, logger: logger)
        case .qemu:
            return try QEMUDriver(image: image, logger: logger)
        case .auto:
            if qemuInstalled { return try QEMUDriver(image: image, logger: logger) }
            logger.warning("QEMU is not installed: using the process backend, which has no hardware isolation")
            return try ProcessSandboxDriver(image: image, logger: logger)
        }
    }

    private func statusRoutes(
        pool: VMPool, consumer: AMQPConnection, catalog: MethodCatalog, predictor: any LatencyPredictor
    ) -> [String: StatusServer.Route] {
        var routes = extraRoutes
        routes["/healthz"] = {
            let pools = await pool.status()
            // Degraded: a pool that should hold VMs holds none (provisioning keeps failing).
            let healthy = pools.allSatisfy { $0.idle + $0.busy + $0.resetting + $0.provisioning > 0 || $0.targetIdle == 0 }
            let body = "{\"status\":\"\(healthy ? "ok" : "degraded")\",\"amqp_connections\":\(consumer.connectionCount),\"methods\":\(catalog.names.count)}\n"
            return .json(Array(body.utf8), status: healthy ? .ok : .serviceUnavailable)
        }
        routes["/pool"] = {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
            return .json((try? [UInt8](encoder.encode(await pool.status()))) ?? [])
        }
        routes["/model"] = {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
            let learned = predictor as? LearnedPredictor
            let status = ModelStatus(
                model: predictor.name, rejectedUpdates: learned?.rejectedUpdates ?? 0, methods: learned?.methodStates() ?? [:])
            return .json((try? [UInt8](encoder.encode(status))) ?? [])
        }
        return routes
    }
}

/// What `/model` shows: the latency model, the updates it refused, and each method's state.
struct ModelStatus: Encodable {
    var model: String
    var rejectedUpdates: Int
    var methods: [String: LearnedPredictor.MethodState]

    enum CodingKeys: String, CodingKey {
        case model
        case rejectedUpdates = "rejected_updates"
        case methods
    }
}

/// The latest host sample, shared between the monitor and the pool.
final class HostSampleBox: Sendable {
    private let sample = Mutex<HostSample?>(nil)

    var latest: HostSample {
        get { sample.withLock { $0 } ?? HostSample(cpuUtilization: 0, cpuCount: 1, memoryTotalMB: 0, memoryAvailableMB: 0, memoryPressure: 0, networkReceiveBps: 0, networkTransmitBps: 0) }
        set { sample.withLock { $0 = newValue } }
    }
}
