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
        /// The most invocations of one method sent to a VM in one frame, when they wait for VMs
        /// together (`pool.batch_calls`); 1 sends each alone.
        public var batchCalls: Int
        /// The predicted run time of a batch's calls together at most, ms (`pool.batch_window_ms`).
        public var batchWindowMs: UInt64

        public init(names: KilnNames, worker: String, host: String, decoder: MessagePackDecoder, localQueue: Int,
                    maxDeadlineMs: UInt64 = 900_000, batchCalls: Int = 1, batchWindowMs: UInt64 = 50) {
            self.names = names
            self.worker = worker
            self.host = host
            self.decoder = decoder
            self.localQueue = localQueue
            self.maxDeadlineMs = maxDeadlineMs
            self.batchCalls = batchCalls
            self.batchWindowMs = batchWindowMs
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
    /// The latency model's live error per method (`kiln_model_error_ratio`).
    let predictionError = PredictionError()
    /// The lines in which invocations wait for VMs to leave in batches; nil sends each alone.
    let batches: BatchFormation?
    let logger: Logger

    /// - Parameter affinityExchange: The consistent-hash exchange keyed invocations go to when
    ///   another worker should run them (`affinity.cross_host`); nil runs every one here.
    public init(
        settings: Settings, catalog: MethodCatalog, pool: VMPool, publisher: AMQPConnection,
        scorer: SuitabilityScorer, backend: String, metrics: WorkerMetrics, history: HistoryRecorder?,
        affinityExchange: String? = nil, logger: Logger
    ) {
        self.batches = settings.batchCalls > 1 ? BatchFormation(maxCalls: settings.batchCalls) : nil
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

        let call: GuestFrame.ExecRequest
        do {
            call = try execRequest(invocation, method: method, deadlineMs: deadlineMs)
        } catch {
            run.result = run.failure(.error, kind: "encode", message: "cannot encode the method's input: \(error)")
            await finish(&run, lease: nil)
            return
        }
        var request = PlacementRequest(
            invocationID: invocation.id, method: invocation.method, profile: method.profile, affinityKey: affinityKey(invocation),
            dependencies: method.dependencies.names)
        let traits = InvocationTraits(
            method: invocation.method, args: invocation.args, argsBytes: delivery.body.count,
            deadlineMs: deadlineMs, dependencies: method.dependencies)
        let placement = InvocationPlacement(scorer: scorer, invocation: traits, backend: backend)
        // A method whose VM must not outlive one call, or one error, runs alone.
        var batchKey = batches != nil && !method.lifecycle.freshVM && !method.lifecycle.destroyOnError
            ? BatchFormation.Key(method: invocation.method, affinityKey: affinityKey(invocation)) : nil
        while true {
            switch await place(request, placement: placement, call: call, batchKey: batchKey) {
            case .failed(PoolError.saturated(let profile, let waiting)):
                logger.warning("pool \(profile) saturated with \(waiting) waiting; requeueing \(invocation.id)")
                try? delivery.nack(requeue: true)
                return
            case .failed(PoolError.shutDown):
                try? delivery.nack(requeue: true)
                return
            case .failed(let error):
                run.scheduleUs = (ContinuousClock.now - received).inMicroseconds
                run.result = run.failure(.error, kind: "provision_failed", message: "no VM could be provisioned: \(error)")
                await finish(&run, lease: nil)
                return
            case .leads(let placed, let ticket):
                run.scheduleUs = (ContinuousClock.now - received).inMicroseconds - placed.lease.provisionDuration.inMicroseconds
                let riders = ticket == nil ? [] : await batches!.board(
                    batchKey!, lease: placed.lease, decision: placed.decision, leaderBytes: call.payload.count,
                    room: min(method.lifecycle.maxUses - placed.lease.reuseCount, batchCalls(predictedExecUs: placed.decision.winner.prediction.execUs)) - 1)
                await lead(call, riders: riders, ticket: ticket ?? 0, placed: placed, method: method, run: &run)
                return
            case .rides(let boarding, let ticket):
                guard case .answered(let answer, let elapsedUs, let hostCPUUs) = await batches!.outcome(of: ticket) else {
                    // A call before it ended the batch's VM: once more, alone.
                    logger.debug("\(invocation.id) did not run in its batch; placing it again")
                    batchKey = nil
                    request.placedAgain = true
                    continue
                }
                // Its wait for a VM, and for the calls before it in the batch.
                let sinceReceived = (ContinuousClock.now - received).inMicroseconds
                run.scheduleUs = sinceReceived - min(elapsedUs, sinceReceived)
                run.result = interpret(
                    answer, elapsedUs: elapsedUs, hostCPUUs: hostCPUUs, call: call, profile: boarding.lease.profile, run: &run)
                let decision = placement.riding(boarding.decision, vm: boarding.lease.vm.id, position: boarding.position)
                await finish(&run, lease: boarding.lease, decision: decision)
                learn(from: run, lease: boarding.lease, decision: decision)
                await observeResources(run, lease: boarding.lease, decision: decision)
                return
            }
        }
    }

    /// How an invocation came out of waiting for a VM.
    private enum Placing {
        /// It was lent a VM (and, when it may batch, left its line under `ticket`).
        case leads(Placed<PlacementDecision>, ticket: BatchFormation.Ticket?)
        /// Another invocation's batch took it.
        case rides(BatchFormation.Boarding, ticket: BatchFormation.Ticket)
        case failed(any Error)
    }

    /// Waits for a VM; with a batch key, in that key's line too, so that the first of the line
    /// to be lent a VM takes the others along. A batch that takes the invocation ends its wait
    /// at once, even while a VM is being provisioned for it (that VM then serves the next).
    private func place(
        _ request: PlacementRequest, placement: InvocationPlacement, call: GuestFrame.ExecRequest, batchKey: BatchFormation.Key?
    ) async -> Placing {
        let (pool, localQueue) = (pool, settings.localQueue)
        guard let batchKey, let batches else {
            do {
                return .leads(try await pool.acquire(request, policy: placement, maxWaiting: localQueue), ticket: nil)
            } catch {
                return .failed(error)
            }
        }
        let ticket = await batches.enlist(batchKey, request: call)
        let acquiring = Task {
            let acquired: Result<Placed<PlacementDecision>, any Error>
            do {
                acquired = .success(try await pool.acquire(request, policy: placement, maxWaiting: localQueue))
            } catch {
                acquired = .failure(error)
            }
            // A batch took the invocation first: the VM ran nothing, and serves the next.
            if await !batches.acquired(ticket, acquired), case .success(let placed) = acquired {
                await pool.giveBack(placed.lease)
            }
        }
        await batches.track(ticket) { acquiring.cancel() }
        switch await withTaskCancellationHandler(operation: { await batches.decision(ticket) }, onCancel: { acquiring.cancel() }) {
        case .boarded(let boarding): return .rides(boarding, ticket: ticket)
        case .acquired(.success(let placed)): return .leads(placed, ticket: ticket)
        case .acquired(.failure(let error)): return .failed(error)
        }
    }

    /// Runs the invocation on the VM it was lent, with the riders its batch took (each gets its
    /// outcome as it ends), publishes its result and gives the VM back.
    private func lead(
        _ call: GuestFrame.ExecRequest, riders: [(ticket: BatchFormation.Ticket, request: GuestFrame.ExecRequest)],
        ticket: BatchFormation.Ticket, placed: Placed<PlacementDecision>, method: MethodCatalog.Method, run: inout Run
    ) async {
        let (lease, decision) = (placed.lease, placed.decision)
        let execution: ExecutionSummary
        var observed = false
        if riders.isEmpty {
            let started = ContinuousClock.now
            let hostCPUAtStart = lease.vm.hostCPUTimeUs()
            let answer: Result<GuestFrame.ExecResult, any Error>
            do { answer = .success(try await lease.vm.exec(call)) } catch { answer = .failure(error) }
            run.result = interpret(
                answer, elapsedUs: (ContinuousClock.now - started).inMicroseconds,
                hostCPUUs: Self.difference(from: hostCPUAtStart, to: lease.vm.hostCPUTimeUs()), call: call,
                profile: lease.profile, run: &run)
            execution = ExecutionSummary(calls: 1, outcome: run.outcome, resetPending: run.resetPending)
            // The VM is reset (or destroyed) while the result is published: it is free for the
            // next invocation without waiting for the broker's confirm. One whose method ran out
            // of memory gets more first, so that the next invocation on it has it.
            let raise = run.outOfMemory && !method.lifecycle.freshVM ? run : nil
            observed = raise != nil
            let invocation = run.invocation
            async let released: Void = {
                if let raise { await self.observeResources(raise, lease: lease, decision: decision) }
                await self.release(lease, execution, method: method, invocation: invocation)
            }()
            await finish(&run, lease: lease, decision: decision)
            await released
        } else {
            let tickets = [ticket] + riders.map(\.ticket)
            logger.debug("\(call.method) on \(lease.vm.id): a batch of \(tickets.count)")
            metrics.batchSent(calls: tickets.count)
            async let ran = runBatch([call] + riders.map(\.request), tickets: tickets, on: lease)
            switch await batches!.outcome(of: ticket) {
            case .answered(let answer, let elapsedUs, let hostCPUUs):
                run.result = interpret(answer, elapsedUs: elapsedUs, hostCPUUs: hostCPUUs, call: call, profile: lease.profile, run: &run)
            case .notRun:
                // The session refuses a first call answered `not_run`; should one come through, it is the VM's failure.
                let failure = VMError.protocolViolation(vm: lease.vm.id, detail: "the first call of a batch was not run")
                run.result = interpret(.failure(failure), elapsedUs: 0, hostCPUUs: nil, call: call, profile: lease.profile, run: &run)
            }
            await finish(&run, lease: lease, decision: decision)
            execution = await ran
            await release(lease, execution, method: method, invocation: run.invocation)
        }
        learn(from: run, lease: lease, decision: decision)
        if !observed { await observeResources(run, lease: lease, decision: decision) }
    }

    /// What a VM did under one lease, as its release needs it.
    private struct ExecutionSummary: Sendable {
        var calls: Int
        /// How the last call that ran left the VM.
        var outcome: ExecOutcome
        var resetPending: Bool
    }

    /// Sends a batch, hands each call's outcome to its invocation as it ends, and tells those
    /// after a failure that they did not run.
    private func runBatch(
        _ requests: [GuestFrame.ExecRequest], tickets: [BatchFormation.Ticket], on lease: VMLease
    ) async -> ExecutionSummary {
        let batches = batches!
        let vm = lease.vm
        let progress = BatchProgress(hostCPUUs: vm.hostCPUTimeUs())
        await vm.execBatch(requests) { index, answer in
            guard let spent = await progress.record(answer, resetAfter: requests[index].resetAfter, hostCPUUs: vm.hostCPUTimeUs()) else {
                await batches.deliver(.notRun, to: tickets[index])
                return
            }
            await batches.deliver(.answered(answer, elapsedUs: spent.elapsedUs, hostCPUUs: spent.hostCPUUs), to: tickets[index])
        }
        // The VM failed during a call: the agent answered none of those after it.
        for ticket in tickets.dropFirst(await progress.answered) {
            await batches.deliver(.notRun, to: ticket)
        }
        return await progress.summary
    }

    /// Each call's time and how the last one that ran left the VM, as a batch's answers arrive.
    private actor BatchProgress {
        private var last = ContinuousClock.now
        private var lastHostCPUUs: UInt64?
        private(set) var answered = 0
        private(set) var summary = ExecutionSummary(calls: 0, outcome: .completed, resetPending: false)

        init(hostCPUUs: UInt64?) {
            lastHostCPUUs = hostCPUUs
        }

        /// Notes a call's answer, with the VM's host CPU time when it came; returns the host's time
        /// and CPU for the call, or nil when the agent did not run it.
        func record(
            _ answer: Result<GuestFrame.ExecResult, any Error>, resetAfter: Bool, hostCPUUs: UInt64?
        ) -> (elapsedUs: UInt64, hostCPUUs: UInt64?)? {
            answered += 1
            if case .success(let result) = answer, result.notRun {
                switch summary.outcome {
                case .timedOut, .crashed, .vmFailed: break
                // No call before it ended the batch (its reset failed, and the agent powers off):
                // the VM is of no further use.
                case .completed, .failed: summary.outcome = .vmFailed("its agent ended a batch early")
                }
                return nil
            }
            let now = ContinuousClock.now
            let hostCPUSpent = InvocationPipeline.difference(from: lastHostCPUUs, to: hostCPUUs)
            defer { (last, lastHostCPUUs) = (now, hostCPUUs) }
            summary.calls += 1
            switch answer {
            case .success(let result):
                summary.outcome = ExecOutcome(result)
                summary.resetPending = result.resetPending && resetAfter
            case .failure(let error):
                summary.outcome = ExecOutcome(failure: error)
                summary.resetPending = false
            }
            return ((now - last).inMicroseconds, hostCPUSpent)
        }
    }

    /// What a counter gained between two readings; nil when either is missing or it went back
    /// (a VM whose process was replaced).
    static func difference(from start: UInt64?, to end: UInt64?) -> UInt64? {
        guard let start, let end, end >= start else { return nil }
        return end - start
    }

    /// The release of a lease: by lifecycle, the VM is reset and kept, or destroyed.
    private func release(_ lease: VMLease, _ execution: ExecutionSummary, method: MethodCatalog.Method, invocation: Invocation) async {
        await pool.release(
            lease, method: invocation.method, affinityKey: affinityKey(invocation), outcome: execution.outcome,
            lifecycle: method.lifecycle, resetInGuest: execution.resetPending, calls: execution.calls)
    }

    /// The model learns the invocation's time, and the history keeps it.
    private func learn(from run: Run, lease: VMLease, decision: PlacementDecision) {
        let outcome = ExecutionOutcome(
            features: decision.winner.features, provisionUs: Double(lease.provisionDuration.inMicroseconds),
            execUs: Double(run.execUs), succeeded: run.outcome.ranToEnd)
        scorer.predictor.observe(outcome)
        if outcome.succeeded, let ratio = predictionError.observe(
            method: run.invocation.method, predictedUs: decision.winner.prediction.totalUs, measuredUs: outcome.provisionUs + outcome.execUs) {
            metrics.modelError(method: run.invocation.method, ratio: ratio)
        }
        history?.record(ExecutionRecord(
            invocationID: run.invocation.id, recordedAtUs: TelemetrySink.nowMicroseconds(), outcome: outcome,
            predictedUs: decision.winner.prediction.totalUs, predictor: scorer.predictor.name,
            baselineUs: decision.baselineUs, placement: decision.explanation.joined(separator: "\n"), usage: run.usage))
    }

    /// After the result is out: how the VM fared against the prediction may change its resources.
    private func observeResources(_ run: Run, lease: VMLease, decision: PlacementDecision) async {
        guard run.outcome.ranToEnd else { return }  // an out-of-memory end is one (`failed`)
        await pool.allocator?.observe(
            vm: lease.vm.id, predictedUs: decision.winner.prediction.execUs, actualUs: Double(run.execUs),
            peakMemoryKB: run.peakMemoryKB, outOfMemory: run.outOfMemory)
    }

    /// The calls a batch holds at most when each is predicted to run `predictedExecUs`: as many as
    /// fit in `pool.batch_window_ms` of predicted time, for that is the most a call waits behind
    /// the others of its batch; at least one.
    private func batchCalls(predictedExecUs: Double) -> Int {
        guard predictedExecUs.isFinite, predictedExecUs > 0 else { return 1 }
        return max(1, Int(min(Double(settings.batchCalls), (Double(settings.batchWindowMs) * 1_000 / predictedExecUs).rounded(.down))))
    }

    /// The exec frame for an invocation.
    private func execRequest(_ invocation: Invocation, method: MethodCatalog.Method, deadlineMs: UInt64) throws -> GuestFrame.ExecRequest {
        let payload = try MessagePackEncoder().encode(MethodInput(args: invocation.args, context: invocation.context))
        // A VM that will be reused resets itself right after answering: the pool then skips the
        // reset's own round trip.
        return GuestFrame.ExecRequest(
            id: invocation.id, method: invocation.method, entry: method.entry, payload: payload, deadlineMs: deadlineMs,
            resetAfter: !method.lifecycle.freshVM)
    }

    /// Makes the invocation's result from the agent's answer (or the VM's failure).
    private func interpret(
        _ outcome: Result<GuestFrame.ExecResult, any Error>, elapsedUs: UInt64, hostCPUUs: UInt64?, call: GuestFrame.ExecRequest,
        profile: VMProfile, run: inout Run
    ) -> InvocationResult {
        let deadline = call.deadlineMs
        let answer: GuestFrame.ExecResult
        switch outcome {
        case .success(let result):
            answer = result
        case .failure(let error):
            run.execUs = elapsedUs
            run.outcome = ExecOutcome(failure: error)
            if run.outcome == .timedOut {
                return run.failure(.timeout, kind: "deadline", message: "VM did not answer within the deadline of \(deadline) ms; it was destroyed")
            }
            return run.failure(.error, kind: "vm_failed", message: "\(error)")
        }
        run.execUs = answer.execUs
        run.peakMemoryKB = answer.maxrssKB
        run.outOfMemory = answer.outOfMemory
        run.usage = InvocationResult.Usage(
            cpuUs: answer.cpuUs, hostCPUUs: hostCPUUs, peakMemoryKB: answer.maxrssKB > 0 ? answer.maxrssKB : nil,
            bytesIn: UInt64(call.payload.count), bytesOut: UInt64(answer.output.count))
        run.resetPending = answer.resetPending && call.resetAfter
        run.outcome = ExecOutcome(answer)
        switch answer.status {
        case .timeout:
            return run.failure(.timeout, kind: "deadline", message: "deadline of \(deadline) ms exceeded; the VM was destroyed",
                               exitCode: answer.exitCode, stderr: answer.stderr)
        case .error where answer.outOfMemory:
            // Not a crash: the reset clears what it left, and the allocator may give the VM more.
            return run.failure(.error, kind: "out_of_memory",
                               message: profile.memoryCeilingMB.map {
                                   "the method ran out of memory: it needs more than its VM had (\(profile.memoryMB) MiB, which the adaptive allocator may raise to \($0) MiB)"
                               } ?? "the method ran out of memory: it needs more than the \(profile.memoryMB) MiB of its VM",
                               exitCode: answer.exitCode, stderr: answer.stderr)
        case .error where answer.crashed:
            return run.failure(.error, kind: "crash", message: "method crashed (exit code \(answer.exitCode))",
                               exitCode: answer.exitCode, stderr: answer.stderr)
        case .error:
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
        result.usage = run.usage
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
        let methodLabel = catalog[result.method] == nil ? WorkerMetrics.unknownMethod : result.method
        metrics.invocationCompleted(
            method: methodLabel, status: result.status, execUs: run.execUs, totalUs: totalUs,
            overheadUs: totalUs > run.execUs ? totalUs - run.execUs : 0, cold: lease?.cold ?? false)
        if let usage = result.usage { metrics.methodUsage(method: methodLabel, usage) }
        metrics.telemetry.emit(.invocationCompleted(.init(
            id: result.id, method: result.method, status: result.status, vm: lease?.vm.id, cold: lease?.cold ?? false,
            execUs: run.execUs, totalUs: totalUs, predictedUs: result.predictedUs,
            provisionUs: lease.map { Self.microseconds(Double($0.provisionDuration.inMicroseconds)) },
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
                suitability: scored.suitability.isFinite ? (scored.suitability * 100).rounded() / 100 : 0, chosen: index == decision.winnerIndex,
                resourceFactor: scored.resourceFactor.isFinite ? (scored.resourceFactor * 1000).rounded() / 1000 : nil)
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

extension ExecOutcome {
    /// How an answered call left its VM.
    init(_ answer: GuestFrame.ExecResult) {
        switch answer.status {
        case .ok: self = .completed
        case .timeout: self = .timedOut
        // Out of memory is not a crash: the reset clears what it left.
        case .error where answer.crashed && !answer.outOfMemory: self = .crashed
        case .error: self = .failed
        }
    }

    /// How a call the VM failed during left it: the host's own deadline ending the call (the
    /// agent did not answer in time, as on a loaded host) is a timeout, whichever side saw it first.
    init(failure error: any Error) {
        if case VMError.timedOut = error { self = .timedOut } else { self = .vmFailed("\(error)") }
    }
}
