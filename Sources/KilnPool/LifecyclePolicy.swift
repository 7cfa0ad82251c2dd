/// What happens to a VM after a method ran in it.
public struct LifecyclePolicy: Sendable, Equatable {
    /// Invocations a VM runs before it is destroyed.
    public var maxUses: Int
    /// Time an idle VM is kept when the pool has more than its target.
    public var idleTTL: Duration
    /// Whether every invocation gets a VM of its own, destroyed afterwards.
    public var freshVM: Bool

    public init(maxUses: Int = 100, idleTTL: Duration = .seconds(300), freshVM: Bool = false) {
        self.maxUses = maxUses
        self.idleTTL = idleTTL
        self.freshVM = freshVM
    }
}

/// How an invocation left its VM.
public enum ExecOutcome: Sendable, Equatable {
    /// The method finished (successfully or not); the VM is sound.
    case completed
    /// The method ran past its deadline: whatever it left running is suspect.
    case timedOut
    /// The VM died, hung or broke the protocol.
    case vmFailed(String)
}

/// The lifecycle decision for a VM coming back from an invocation.
public enum ReleaseAction: Sendable, Equatable {
    /// Reset it and return it to the pool.
    case reuse
    /// Destroy it, for `reason` (it appears in `vm.destroyed` events).
    case destroy(reason: String)
}

extension LifecyclePolicy {
    /// Decides what to do with a VM that has now run `uses` invocations.
    public func action(after outcome: ExecOutcome, uses: Int) -> ReleaseAction {
        switch outcome {
        case .timedOut: return .destroy(reason: "tainted:timeout")
        case .vmFailed: return .destroy(reason: "tainted:vm_failed")
        case .completed:
            if freshVM { return .destroy(reason: "fresh_vm_policy") }
            if uses >= maxUses { return .destroy(reason: "max_uses") }
            return .reuse
        }
    }
}
