/// The virtio balloon through QMP: how much of its RAM the guest may use.
extension QMPClient {
    /// Asks the guest to use `guestMB` MiB of its RAM (the balloon takes or gives back the rest)
    /// and waits until it does (`query-balloon`'s `actual`), polling every 2 ms.
    /// - Throws: ``VMError/timedOut(vm:step:after:detail:)`` when the guest has not got there by
    ///   `deadline` (it may still be on its way), or a monitor error.
    func setBalloon(guestMB: Int, vm: String, until deadline: ContinuousClock.Instant) async throws(VMError) {
        let started = ContinuousClock.now
        try await execute("balloon", arguments: #"{"value":\#(guestMB << 20)}"#, until: deadline)
        var actualMB = -1
        while ContinuousClock.now < deadline {
            actualMB = (try await execute("query-balloon", until: deadline).integer("actual") ?? -1) >> 20
            // The guest moves whole pages: within a MiB is there.
            if abs(actualMB - guestMB) <= 1 { return }
            try? await Task.sleep(for: .milliseconds(2))
        }
        throw .timedOut(vm: vm, step: "setting the balloon to \(guestMB) MiB", after: started.duration(to: .now),
                        detail: "the guest has \(actualMB) MiB")
    }
}
