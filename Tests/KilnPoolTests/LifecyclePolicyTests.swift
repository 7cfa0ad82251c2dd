import KilnPool
import Testing

/// What happens to a VM after each way an invocation can end.
@Suite("Lifecycle policy")
struct LifecyclePolicyTests {
    @Test func timeoutsAndDeadVMsAreAlwaysDestroyed() {
        let policy = LifecyclePolicy(destroyOnCrash: false)
        #expect(policy.action(after: .timedOut, uses: 1) == .destroy(reason: "tainted:timeout"))
        #expect(policy.action(after: .vmFailed("gone"), uses: 1) == .destroy(reason: "tainted:vm_failed"))
    }

    @Test func aCrashTaintsTheVMUnlessThePolicyKeepsIt() {
        #expect(LifecyclePolicy().action(after: .crashed, uses: 1) == .destroy(reason: "tainted:crash"))
        #expect(LifecyclePolicy(destroyOnCrash: false).action(after: .crashed, uses: 1) == .reuse)
    }

    @Test func aFailureKeepsTheVMUnlessThePolicyDestroysIt() {
        #expect(LifecyclePolicy().action(after: .failed, uses: 1) == .reuse)
        #expect(LifecyclePolicy(destroyOnError: true).action(after: .failed, uses: 1) == .destroy(reason: "tainted:error"))
        #expect(LifecyclePolicy(destroyOnError: true).action(after: .completed, uses: 1) == .reuse)
    }

    @Test func usesAndFreshVMsEndAVMThatIsOtherwiseSound() {
        let policy = LifecyclePolicy(maxUses: 3)
        #expect(policy.action(after: .completed, uses: 2) == .reuse)
        #expect(policy.action(after: .failed, uses: 3) == .destroy(reason: "max_uses"))
        #expect(LifecyclePolicy(freshVM: true).action(after: .completed, uses: 1) == .destroy(reason: "fresh_vm_policy"))
    }

    @Test func onlyRunsThatReachedTheirEndTeachTheLatencyModel() {
        #expect(ExecOutcome.completed.ranToEnd && ExecOutcome.failed.ranToEnd)
        #expect(!ExecOutcome.crashed.ranToEnd && !ExecOutcome.timedOut.ranToEnd && !ExecOutcome.vmFailed("x").ranToEnd)
    }
}
