import KilnAMQP
import KilnPool
import KilnWire

/// One invocation in flight: what is known so far.
struct Run {
    let invocation: Invocation
    let delivery: AMQPDelivery
    let received: ContinuousClock.Instant
    let receivedAtUs: UInt64
    var scheduleUs: UInt64 = 0
    var execUs: UInt64 = 0
    var peakMemoryKB: UInt64 = 0
    /// The guest's OOM killer ended the method.
    var outOfMemory = false
    /// What the call consumed in its VM, as the agent measured it.
    var usage: InvocationResult.Usage?
    /// The agent confirmed it resets the guest after this call (`reset_pending`).
    var resetPending = false
    var outcome = ExecOutcome.completed
    var result: InvocationResult?

    /// Redeliveries carry the broker's count: quorum queues set `x-delivery-count`.
    var attempt: UInt32 {
        if let count = delivery.properties.headers["x-delivery-count"]?.intValue { return UInt32(max(0, count)) + 1 }
        return delivery.redelivered ? 2 : 1
    }

    func result(_ status: InvocationResult.Status) -> InvocationResult {
        InvocationResult(
            id: invocation.id, method: invocation.method, status: status, attempt: attempt,
            timing: .init(schedule: 0, provision: 0, exec: 0, total: 0), worker: "", finishedAtUs: 0)
    }

    func failure(
        _ status: InvocationResult.Status, kind: String, message: String, exitCode: Int32? = nil, stderr: String? = nil
    ) -> InvocationResult {
        var result = result(status)
        result.error = .init(kind: kind, message: message, exitCode: exitCode, stderr: stderr)
        return result
    }
}
