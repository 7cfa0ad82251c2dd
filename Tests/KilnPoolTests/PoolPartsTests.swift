@testable import KilnPool
import KilnVM
import Testing

/// The pool's decisions as values: lending between profiles, the saturation gate, and which idle
/// VM the sizing loop lets go.
@Suite("Pool parts")
struct PoolPartsTests {
    let medium = VMProfile(name: "medium", vcpus: 1, memoryMB: 256)
    let large = VMProfile(name: "large", vcpus: 2, memoryMB: 512)
    let start = ContinuousClock.now

    func state(_ profile: VMProfile, idle: Int, target: Int, idleSince: [Duration] = []) -> ProfileState {
        var state = ProfileState(settings: PoolProfile(vm: profile, minIdle: target), demandWindow: .seconds(30))
        state.idle = (0..<idle).map { index in
            let vm = FakeVM(id: "\(profile.name)-\(index)", profile: profile) {}
            let since = index < idleSince.count ? start + idleSince[index] : start
            return PoolEntry(vm: vm, profile: profile.name, createdAt: start, idleSince: since)
        }
        return state
    }

    @Test func onlyProfilesAtLeastAsLargeWithASurplusLendSmallestFirstNewestFirst() {
        let borrowing = Borrowing(
            profiles: ["small": state(.small, idle: 0, target: 0), "medium": state(medium, idle: 2, target: 0),
                       "large": state(large, idle: 2, target: 1)],
            waiting: { _ in 0 })
        #expect(borrowing.lendableVMs(for: .small).map(\.vm.id) == ["medium-1", "medium-0", "large-1", "large-0"])
        // A medium method does not fit a small VM, and a profile never borrows from itself.
        #expect(borrowing.lendableVMs(for: medium).map(\.vm.id) == ["large-1", "large-0"])
        #expect(borrowing.lendableVMs(for: large).isEmpty)
    }

    @Test func aProfileAtItsTargetOrWithInvocationsWaitingKeepsItsVMs() {
        let profiles = ["small": state(.small, idle: 0, target: 0), "medium": state(medium, idle: 1, target: 1),
                        "large": state(large, idle: 2, target: 0)]
        #expect(Borrowing(profiles: profiles, waiting: { _ in 0 }).lendableVMs(for: .small).map(\.vm.id) == ["large-1", "large-0"])
        let largeWaits = Borrowing(profiles: profiles, waiting: { $0 == "large" ? 1 : 0 })
        #expect(largeWaits.lendableVMs(for: .small).isEmpty)
        #expect(largeWaits.borrowers(of: "large").isEmpty)
    }

    @Test func aFreedVMWakesTheClosestFittingSmallerProfileFirst() {
        let borrowing = Borrowing(
            profiles: ["small": state(.small, idle: 0, target: 0), "medium": state(medium, idle: 0, target: 0),
                       "large": state(large, idle: 1, target: 0)],
            waiting: { _ in 0 })
        #expect(borrowing.borrowers(of: "large") == ["medium", "small"])
        #expect(borrowing.borrowers(of: "medium").isEmpty, "medium has no idle VM over its target")
        #expect(borrowing.borrowers(of: "nonexistent").isEmpty)
    }

    @Test func theGateHoldsOnlyWhenTheCPUIsSaturatedAndEnoughVMsWork() {
        let gate = SaturationGate(limits: PoolLimits(saturatedBusyLimit: 2, saturatedCPU: 0.9))
        func sample(_ cpu: Double) -> HostSample {
            HostSample(cpuUtilization: cpu, cpuCount: 2, memoryTotalMB: 1_000, memoryAvailableMB: 500,
                       memoryPressure: 0, networkReceiveBps: 0, networkTransmitBps: 0)
        }
        #expect(gate.holds(sample(0.95), working: 2))
        #expect(gate.holds(sample(0.9), working: 3))
        #expect(!gate.holds(sample(0.95), working: 1), "a saturated host with room for more work")
        #expect(!gate.holds(sample(0.89), working: 5), "a busy host below saturation")
    }

    @Test func theSizingLoopLetsGoTheOldestIdleVMPastItsTTLAboveTheTarget() {
        var state = state(.small, idle: 3, target: 1, idleSince: [.seconds(5), .seconds(1), .seconds(3)])
        let ttl = Duration.seconds(10)
        #expect(state.expiredIdleVM(now: start + .seconds(10), ttl: ttl) == nil, "none idle past the TTL")
        #expect(state.expiredIdleVM(now: start + .seconds(12), ttl: ttl) == 1, "the oldest goes first")
        state.idle.remove(at: 1)
        #expect(state.expiredIdleVM(now: start + .seconds(14), ttl: ttl) == 1)
        state.idle.remove(at: 1)
        #expect(state.expiredIdleVM(now: start + .seconds(100), ttl: ttl) == nil, "never below the target")
    }
}
