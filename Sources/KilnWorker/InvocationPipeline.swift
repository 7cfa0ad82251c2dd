import KilnAMQP
import KilnPool
import KilnPredict
import KilnVM
import KilnWire
import Logging

/// What a method program reads on stdin.
struct MethodInput: Encodable {
    var args: MessagePackValue
    var context: ExecutionContext?
}

/// What a method program writes on stdout when it succeeds.
struct MethodOutput: Decodable {
    var output: MessagePackValue?
    var context: ExecutionContext?
}

/// Resolves a method to its guest entry, deadline, VM profile and lifecycle.
public struct MethodCatalog: Sendable {
    public struct Method: Sendable {
        public var entry: [String]
        public var deadlineMs: UInt64
        public var profile: String
        public var lifecycle: LifecyclePolicy
        /// What it needs beyond its code, as the latency model knows it.
        public var dependencies: MethodDependencies
    }

    private let methods: [String: Method]
    /// Methods that need more than any profile has, with the reason.
    public let unplaceable: [String: String]

    /// Builds the catalog from the image's manifest: each method gets the smallest configured
    /// profile with enough vCPUs and memory.
    public init(manifest: MethodManifest, profiles: [PoolProfile], lifecycle: (String, MethodManifest.Method) -> LifecyclePolicy) {
        var methods: [String: Method] = [:]
        var unplaceable: [String: String] = [:]
        let bySize = profiles.sorted { ($0.vm.memoryMB, $0.vm.vcpus) < ($1.vm.memoryMB, $1.vm.vcpus) }
        for (name, method) in manifest.methods {
            guard let entry = manifest.guestEntry(for: name) else { continue }
            guard let profile = bySize.first(where: { $0.vm.vcpus >= method.resources.vcpus && $0.vm.memoryMB >= method.resources.memoryMB }) else {
                unplaceable[name] = "needs \(method.resources.vcpus) vCPUs and \(method.resources.memoryMB) MiB; no profile has that"
                continue
            }
            let dependencies = MethodDependencies(names: method.dependencies.names, sizeMB: Double(method.dependencies.sizeMB))
            methods[name] = Method(
                entry: entry, deadlineMs: method.deadlineMs, profile: profile.vm.name, lifecycle: lifecycle(name, method),
                dependencies: dependencies)
        }
        self.methods = methods
        self.unplaceable = unplaceable
    }

    public subscript(method: String) -> Method? { methods[method] }

    public var names: [String] { methods.keys.sorted() }

    /// Why `method` cannot run here: the methods this worker has (the first 30), and the one
    /// the caller most likely meant.
    public func unknownMethodReason(_ method: String) -> String {
        let known = names
        let listed = known.prefix(30).joined(separator: ", ") + (known.count > 30 ? " and \(known.count - 30) more" : "")
        return "method '\(method)' is not in this worker's image\(ClosestName.hint(for: method, among: known)); it has \(listed)"
    }
}

/// The path of one invocation: decode, look up, place, execute, publish the result, acknowledge,
/// then give the VM back. It never throws and never crashes on input: a body it cannot read is
/// dead-lettered with the reason, anything else becomes a result.
public struct InvocationPipeline: Sendable {
    public struct Settings: Sendable {
        public var names: KilnNames
        public var worker: String
        /// The worker's host id (`worker.host`), in every result.
        public var host: String
        public var decoder: MessagePackDecoder
        /// Invocations waiting for a VM on this worker at most.
        public var localQueue: Int
        /// The longest deadline an invocation may run under, ms.
        public var maxDeadlineMs: UInt64

        public init(names: KilnNames, worker: String, host: String, decoder: MessagePackDecoder, localQueue: Int,
                    maxDeadlineMs: UInt64 = 900_000) {
            self.names = names
            self.worker = worker
            self.host = host
            self.decoder = decoder
            self.localQueue = localQueue
            self.maxDeadlineMs = maxDeadlineMs
        }
    }

    let settings: Settings
    let catalog: MethodCatalog
    let pool: VMPool
    let publisher: AMQPConnection
    let scorer: SuitabilityScorer
    /// The pool's backend, as the model knows it.
    let backend: String
    let metrics: WorkerMetrics
    let history: HistoryRecorder?
    /// Cross-host affinity's forwarding, when the worker takes part in it.
    let forwarder: AffinityForwarder?
    let logger: Logger

    /// - Parameter affinityExchange: The consistent-hash exchange keyed invocations go to when
    ///   another worker should run them (`affinity.cross_host`); nil runs every one here.
    public init(
        settings: Settings, catalog: MethodCatalog, pool: VMPool, publisher: AMQPConnection,
        scorer: SuitabilityScorer, backend: String, metrics: WorkerMetrics, history: HistoryRecorder?,
        affinityExchange: String? = nil, logger: Logger
    ) {
        self.forwarder = affinityExchange.map { AffinityForwarder(exchange: $0, publisher: publisher, pool: pool, logger: logger) }
        self.settings = settings
        self.catalog = catalog
        self.pool = pool
        self.publisher = publisher
        self.scorer = scorer
        self.backend = backend
        self.metrics = metrics
        self.history = history
        self.logger = logger
    }

    /// Handles one delivery to the end: its result published and confirmed, then acked (or
    /// dead-lettered, or requeued when this worker cannot take it now).
    public func handle(_ delivery: AMQPDelivery) async {
        let received = ContinuousClock.now
        let receivedAtUs = TelemetrySink.nowMicroseconds()
        let invocation: Invocation
        do {
            invocation = try delivery.body.withUnsafeBytes {
                try Invocation.decode(body: $0, messageID: delivery.properties.messageID, decoder: settings.decoder)
            }
        } catch {
            await deadLetter(delivery, reason: "\(error)", kind: error.caseName)
            return
        }
        let deadlineMs = invocation.deadlineMs ?? catalog[invocation.method]?.deadlineMs ?? 0
        var run = Run(invocation: invocation, delivery: delivery, received: received, receivedAtUs: receivedAtUs)

        guard let method = catalog[invocation.method] else {
            let reason = catalog.unplaceable[invocation.method] ?? catalog.unknownMethodReason(invocation.method)
            run.result = run.failure(.rejected, kind: catalog.unplaceable[invocation.method] == nil ? "unknown_method" : "no_profile", message: reason)
            await finish(&run, lease: nil)
            return
        }
        // Every timer below is set from it: out of range, it would overflow one or wait for ever.
        guard (1...settings.maxDeadlineMs).contains(deadlineMs) else {
            run.result = run.failure(
                .rejected, kind: "invalid_deadline",
                message: "deadline_ms must be 1 to \(settings.maxDeadlineMs) (limits.max_deadline_ms), not \(deadlineMs)")
            await finish(&run, lease: nil)
            return
        }

        if let forwarder, await forwarder.forwarded(invocation, delivery: delivery, attempt: run.attempt, poolKey: affinityKey(invocation)) {
            return
        }

        let request = PlacementRequest(
            invocationID: invocation.id, method: invocation.method, profile: method.profile, affinityKey: affinityKey(invocation),
            dependencies: method.dependencies.names)
        let traits = InvocationTraits(
            method: invocation.method, args: invocation.args, argsBytes: delivery.body.count,
            deadlineMs: deadlineMs, dependencies: method.dependencies)
        let lease: VMLease
        let decision: PlacementDecision
        do {
            let placed = try await pool.acquire(
                request, policy: InvocationPlacement(scorer: scorer, invocation: traits, backend: backend), maxWaiting: settings.localQueue)
            (lease, decision) = (placed.lease, placed.decision)
        } catch PoolError.saturated(let profile, let waiting) {
            logger.warning("pool \(profile) saturated with \(waiting) waiting; requeueing \(invocation.id)")
            try? delivery.nack(requeue: true)
            return
        } catch PoolError.shutDown {
            try? delivery.nack(requeue: true)
            return
        } catch {
            run.scheduleUs = (ContinuousClock.now - received).inMicroseconds
            run.result = run.failure(.error, kind: "provision_failed", message: "no VM could be provisioned: \(error)")
            await finish(&run, lease: nil)
            return
        }
        run.scheduleUs = (ContinuousClock.now - received).inMicroseconds - lease.provisionDuration.inMicroseconds
        run.result = await execute(invocation, method: method, deadlineMs: deadlineMs, on: lease, run: &run)
        // The VM is reset (or destroyed) while the result is published: it is free for the next
        // invocation without waiting for the broker's confirm.
        let execOutcome = run.outcome
        let resetInGuest = run.resetPending
        async let released: Void = pool.release(
            lease, method: invocation.method, affinityKey: affinityKey(invocation), outcome: execOutcome,
            lifecycle: method.lifecycle, resetInGuest: resetInGuest)
        await finish(&run, lease: lease, decision: decision)
        await released
        // After the result is out: how the VM fared against the prediction may change its resources.
        if run.outcome.ranToEnd {
            await pool.allocator?.observe(
                vm: lease.vm.id, predictedUs: decision.winner.prediction.execUs, actualUs: Double(run.execUs),
                peakMemoryKB: run.peakMemoryKB)
        }
        let outcome = ExecutionOutcome(
            features: decision.winner.features, provisionUs: Double(lease.provisionDuration.inMicroseconds),
            execUs: Double(run.execUs), succeeded: run.outcome.ranToEnd)
        scorer.predictor.observe(outcome)
        history?.record(ExecutionRecord(
            invocationID: invocation.id, recordedAtUs: TelemetrySink.nowMicroseconds(), outcome: outcome,
            predictedUs: decision.winner.prediction.totalUs, predictor: scorer.predictor.name,
            baselineUs: decision.baselineUs, placement: decision.explanation.joined(separator: "\n")))
    }

    /// Runs the method in the VM and makes its result.
    private func execute(
        _ invocation: Invocation, method: MethodCatalog.Method, deadlineMs deadline: UInt64, on lease: VMLease, run: inout Run
    ) async -> InvocationResult {
        let payload: [UInt8]
        do {
            payload = try MessagePackEncoder().encode(MethodInput(args: invocation.args, context: invocation.context))
        } catch {
            return run.failure(.error, kind: "encode", message: "cannot encode the method's input: \(error)")
        }
        // A VM that will be reused resets itself right after answering: the pool then skips the
        // reset's own round trip.
        let request = GuestFrame.ExecRequest(
            id: invocation.id, method: invocation.method, entry: method.entry, payload: payload, deadlineMs: deadline,
            resetAfter: !method.lifecycle.freshVM)
        let started = ContinuousClock.now
        let answer: GuestFrame.ExecResult
        do {
            answer = try await lease.vm.exec(request)
        } catch {
            run.execUs = (ContinuousClock.now - started).inMicroseconds
            run.outcome = .vmFailed("\(error)")
            if case VMError.timedOut = error {
                // The host's own deadline ended the call (the agent did not answer in time, as on
                // a loaded host): a timeout, whichever side saw it first.
                run.outcome = .timedOut
                return run.failure(.timeout, kind: "deadline", message: "VM did not answer within the deadline of \(deadline) ms; it was destroyed")
            }
            return run.failure(.error, kind: "vm_failed", message: "\(error)")
        }
        run.execUs = answer.execUs
        run.peakMemoryKB = answer.maxrssKB
        run.resetPending = answer.resetPending && request.resetAfter
        switch answer.status {
        case .timeout:
            run.outcome = .timedOut
            return run.failure(.timeout, kind: "deadline", message: "deadline of \(deadline) ms exceeded; the VM was destroyed",
                               exitCode: answer.exitCode, stderr: answer.stderr)
        case .error where answer.outOfMemory:
            // Not a crash: the reset clears what it left, and the allocator may give the VM more.
            run.outcome = .failed
            return run.failure(.error, kind: "out_of_memory",
                               message: "the method ran out of memory: it needs more than the \(lease.profile.memoryMB) MiB of its VM",
                               exitCode: answer.exitCode, stderr: answer.stderr)
        case .error where answer.crashed:
            run.outcome = .crashed
            return run.failure(.error, kind: "crash", message: "method crashed (exit code \(answer.exitCode))",
                               exitCode: answer.exitCode, stderr: answer.stderr)
        case .error:
            run.outcome = .failed
            if let reported = answer.methodError {
                // A serve-mode runtime answered with an error: nothing exited, it serves on.
                return run.failure(.error, kind: "method_error", message: "the method reported an error: \(reported.prefix(2_000))",
                                   stderr: answer.stderr)
            }
            return run.failure(.error, kind: "exit", message: "method exited with code \(answer.exitCode)",
                               exitCode: answer.exitCode, stderr: answer.stderr)
        case .ok:
            do {
                let output = try settings.decoder.decode(MethodOutput.self, from: answer.output)
                var result = run.result(.ok)
                result.output = output.output
                result.context = output.context
                return result
            } catch {
                run.outcome = .failed
                return run.failure(.error, kind: "bad_output", message: "the method's stdout is not {output, context?}: \(error)",
                                   exitCode: answer.exitCode, stderr: answer.stderr)
            }
        }
    }

    /// Publishes the result (to `kiln.results` and to `reply_to`), acks the delivery once the
    /// broker confirmed it, and reports it.
    private func finish(_ run: inout Run, lease: VMLease?, decision: PlacementDecision? = nil) async {
        guard var result = run.result else { return }
        let totalUs = (ContinuousClock.now - run.received).inMicroseconds
        result.timing = InvocationResult.Timing(
            queue: run.invocation.submittedAtUs.map { run.receivedAtUs > $0 ? run.receivedAtUs - $0 : 0 },
            schedule: run.scheduleUs, provision: lease?.provisionDuration.inMicroseconds ?? 0, exec: run.execUs, total: totalUs)
        if let lease {
            result.vm = .init(id: lease.vm.id, backend: lease.vm.backend.name, profile: lease.profile.name, cold: lease.cold,
                              reuseCount: UInt32(lease.reuseCount))
        }
        if let decision {
            result.predictedUs = Self.microseconds(decision.winner.prediction.totalUs)
        }
        result.worker = settings.worker
        result.host = settings.host
        result.finishedAtUs = TelemetrySink.nowMicroseconds()
        do {
            let body = try MessagePackEncoder().encode(result)
            let properties = AMQPProperties.msgpack(messageID: result.id, correlationID: run.delivery.properties.correlationID ?? result.id)
            let toResults = AMQPMessage(
                exchange: settings.names.resultsExchange, routingKey: result.routingKey, body: body, properties: properties)
            async let published: Void = publisher.publish(toResults)
            if let replyTo = run.delivery.properties.replyTo, !replyTo.isEmpty {
                do {
                    try await publisher.publish(AMQPMessage(exchange: "", routingKey: replyTo, body: body, properties: properties, mandatory: true))
                } catch AMQPError.unroutable {
                    // The caller stopped waiting (its reply queue is gone): kiln.results still has it.
                }
            }
            try await published
            try run.delivery.ack()
        } catch let error as WireError {
            await deadLetter(run.delivery, reason: "its result cannot be encoded: \(error)", kind: "unpublishable_result")
            return
        } catch AMQPError.invalidMessage(let reason) {
            // Publishing it again would fail the same way: out of the queue, with the reason.
            await deadLetter(run.delivery, reason: "its result cannot be published: \(reason)", kind: "unpublishable_result")
            return
        } catch {
            // Not acked: the broker redelivers it, with a higher attempt.
            logger.error("result of \(result.id) not published (\(error)); the invocation will be redelivered")
            return
        }
        // Labels only for the manifest's methods: a producer inventing names must not grow /metrics.
        metrics.invocationCompleted(
            method: catalog[result.method] == nil ? WorkerMetrics.unknownMethod : result.method, status: result.status, execUs: run.execUs, totalUs: totalUs,
            overheadUs: totalUs > run.execUs ? totalUs - run.execUs : 0, cold: lease?.cold ?? false)
        metrics.telemetry.emit(.invocationCompleted(.init(
            id: result.id, method: result.method, status: result.status, vm: lease?.vm.id, cold: lease?.cold ?? false,
            execUs: run.execUs, totalUs: totalUs, predictedUs: result.predictedUs,
            placement: decision.map(placementSummary))))
    }

    /// The decision as the `invocation.completed` event carries it.
    private func placementSummary(_ decision: PlacementDecision) -> TelemetryEvent.Placement {
        TelemetryEvent.Placement(model: scorer.predictor.name, candidates: decision.candidates.enumerated().map { index, scored in
            let place: String
            switch scored.candidate.kind {
            case .idle(let vm): place = vm
            case .provision: place = "new"
            }
            return .init(
                place: place, warmth: scored.features.warmth.rawValue,
                predictedUs: Self.microseconds(scored.prediction.totalUs), uncertaintyUs: Self.microseconds(scored.prediction.uncertaintyUs),
                suitability: scored.suitability.isFinite ? (scored.suitability * 100).rounded() / 100 : 0, chosen: index == decision.winnerIndex)
        })
    }

    /// The invocation's affinity key as the pool keeps it (beside every idle VM): a long one by
    /// its hash, so that a producer's megabyte key costs the pool a few bytes. Only equality
    /// matters, within this process.
    private func affinityKey(_ invocation: Invocation) -> String? {
        guard let key = invocation.affinity?.key else { return nil }
        return key.utf8.count <= 256 ? key : "#\(key.utf8.count):\(String(UInt(bitPattern: key.hashValue), radix: 16))"
    }

    /// A non-negative figure in whole microseconds, whatever the double holds.
    private static func microseconds(_ value: Double) -> UInt64 {
        value.isFinite ? UInt64(min(max(0, value), 1.8e19)) : 0
    }

    private func deadLetter(_ delivery: AMQPDelivery, reason: String, kind: String) async {
        logger.warning("dead-lettering an invocation from \(delivery.routingKey.loggable): \(reason.loggable)")
        do {
            try await publisher.deadLetter(delivery, reason: reason, exchange: settings.names.deadExchange)
            try delivery.ack()
            metrics.deadLettered(reason: kind)
        } catch {
            logger.error("could not dead-letter (\(error)); rejecting to the queue's dead-letter exchange")
            try? delivery.reject(requeue: false)
        }
    }
}
