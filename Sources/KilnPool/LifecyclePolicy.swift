/// What happens to a VM after a method ran in it.
public struct LifecyclePolicy: Sendable, Equatable {
    /// Invocations a VM runs before it is destroyed.
    public var maxUses: Int
    /// Time an idle VM is kept when the pool has more than its target.
    public var idleTTL: Duration
    /// Whether every invocation gets a VM of its own, destroyed afterwards.
    public var freshVM: Bool
    /// Whether a VM whose method failed (a non-zero exit, an error its runtime reported) is
    /// destroyed rather than reset.
    public var destroyOnError: Bool
    /// Whether a VM whose method crashed (see ``ExecOutcome/crashed``) is destroyed rather than reset.
    public var destroyOnCrash: Bool

    /// Creates a policy; the defaults reuse a VM up to `maxUses` times and destroy it after a
    /// crash but not after a failure.
    public init(
        maxUses: Int = 100, idleTTL: Duration = .seconds(300), freshVM: Bool = false, destroyOnError: Bool = false,
        destroyOnCrash: Bool = true
    ) {
        self.maxUses = maxUses
        self.idleTTL = idleTTL
        self.freshVM = freshVM
        self.destroyOnError = destroyOnError
        self.destroyOnCrash = destroyOnCrash
    }
}

/// How an invocation left its VM.
public enum ExecOutcome: Sendable, Equatable {
    /// The method finished and answered; the VM is sound.
    case completed
    /// The method finished with an error of its own: a non-zero exit, or an error its serve
    /// runtime reported.
    case failed
    /// The method crashed: a crash signal ended its process, or its serve runtime died after
    /// serving calls or broke the protocol during the call. What it left in the guest is suspect.
    case crashed
    /// The method ran past its deadline: whatever it left running is suspect.
    case timedOut
    /// The VM died, hung or broke the protocol.
    case vmFailed(String)

    /// Whether the method ran to its own end, successfully or not: its time is one of the
    /// method's, for the latency model.
    public var ranToEnd: Bool { self == .completed || self == .failed }
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
        case .crashed where destroyOnCrash: return .destroy(reason: "tainted:crash")
        case .failed where destroyOnError: return .destroy(reason: "tainted:error")
        case .completed, .failed, .crashed:
            if freshVM { return .destroy(reason: "fresh_vm_policy") }
            if uses >= maxUses { return .destroy(reason: "max_uses") }
            return .reuse
        }
    }
}
