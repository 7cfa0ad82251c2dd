import KilnWire

/// Hands results that arrive on the reply consumer to the calls that await them: one kept until
/// it is asked for, one for an id nobody awaits dropped, all failed at once when the connection
/// is lost.
actor ResultRouter {
    private var awaited: Set<String> = []
    private var arrived: [String: InvocationResult] = [:]
    private var waiters: [String: CheckedContinuation<InvocationResult, any Error>] = [:]

    /// The result of `id` will be asked for.
    func expect(_ id: String) {
        awaited.insert(id)
    }

    /// A result from the reply consumer.
    func deliver(_ result: InvocationResult) {
        guard awaited.contains(result.id) else { return }
        if let waiter = waiters.removeValue(forKey: result.id) {
            awaited.remove(result.id)
            waiter.resume(returning: result)
        } else {
            arrived[result.id] = result
        }
    }

    /// The result of `id`, when it comes.
    func wait(for id: String) async throws -> InvocationResult {
        if let result = arrived.removeValue(forKey: id) {
            awaited.remove(id)
            return result
        }
        guard awaited.contains(id) else { throw KilnClientError.connectionLost("the result of \(id) is not awaited (any more)") }
        return try await withCheckedThrowingContinuation { waiters[id] = $0 }
    }

    /// Stops waiting for `id`: a waiter gets `error`, a result that comes later is dropped.
    func forget(_ id: String, error: any Error = CancellationError()) {
        awaited.remove(id)
        arrived.removeValue(forKey: id)
        waiters.removeValue(forKey: id)?.resume(throwing: error)
    }

    /// Fails everything awaited with `error`; returns how many there were.
    @discardableResult
    func failAll(_ error: any Error) -> Int {
        let count = awaited.count
        for waiter in waiters.values { waiter.resume(throwing: error) }
        waiters.removeAll()
        arrived.removeAll()
        awaited.removeAll()
        return count
    }
}
