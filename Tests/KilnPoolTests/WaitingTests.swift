import KilnPool
import KilnVM
import Logging
import Testing

/// The pool driven through a fake driver: an invocation that finds no VM waits, one whose task
/// is cancelled leaves the line at once, a VM that comes free goes to the next in line, shutdown
/// wakes everyone; the pool's service provisions what replenishing asks for.
@Suite("Pool through a fake driver")
struct WaitingTests {
    let logger = Logger(label: "kiln.test") { _ in SwiftLogNoOpLogHandler() }

    func pool(_ driver: FakeDriver, minIdle: Int = 0, maxTotal: Int = 1) -> VMPool {
        VMPool(
            driver: driver, backend: .process, profiles: [PoolProfile(vm: .small, minIdle: minIdle, maxIdle: minIdle, maxTotal: maxTotal)],
            sizer: PoolSizer(limits: PoolLimits()),
            host: {
                HostSample(cpuUtilization: 0.1, cpuCount: 2, memoryTotalMB: 24_000, memoryAvailableMB: 20_000,
                           memoryPressure: 0, networkReceiveBps: 0, networkTransmitBps: 0)
            },
            observer: SaturationGateTests.Silent(), logger: logger)
    }

    func request(_ id: String) -> PlacementRequest {
        PlacementRequest(invocationID: id, method: "echo", profile: VMProfile.small.name)
    }

    func acquire(_ pool: VMPool, _ id: String) async throws -> VMLease {
        try await pool.acquire(request(id), policy: SaturationGateTests.FirstCandidate(), maxWaiting: 8).lease
    }

    /// Polls the pool until `condition` holds for the small profile's status.
    func until(_ pool: VMPool, _ condition: (PoolStatus) -> Bool) async throws -> PoolStatus? {
        func small() async -> PoolStatus? { await pool.status().first { $0.profile == VMProfile.small.name } }
        for _ in 0..<10_000 {
            if let status = await small(), condition(status) { return status }
            await Task.yield()
            try await Task.sleep(for: .milliseconds(1))
        }
        return await small()
    }

    @Test func aCancelledWaiterLeavesTheLineAndTheNextGetsTheVM() async throws {
        let driver = FakeDriver()
        let pool = pool(driver)
        let first = try await acquire(pool, "1")
        let cancelled = Task { try await acquire(pool, "2") }
        let kept = Task { try await acquire(pool, "3") }
        #expect(try await until(pool) { $0.waiting == 2 }?.waiting == 2)

        cancelled.cancel()
        await #expect(throws: CancellationError.self) { _ = try await cancelled.value }
        #expect(try await until(pool) { $0.waiting == 1 }?.waiting == 1, "the cancelled invocation is still in line")

        // The VM that comes free goes to the one still waiting, not to the one that left.
        await pool.release(first, method: "echo", affinityKey: nil, outcome: .completed, lifecycle: LifecyclePolicy())
        let next = try await kept.value
        #expect(next.vm.id == first.vm.id)
        #expect(driver.made == 1)
        #expect(await pool.status().first?.waiting == 0)
        await pool.shutdown()
    }

    @Test func aWaiterCancelledBeforeItWaitsDoesNotWait() async throws {
        let driver = FakeDriver()
        let pool = pool(driver)
        let first = try await acquire(pool, "1")
        let started = Task {
            withUnsafeCurrentTask { $0?.cancel() }
            return try await acquire(pool, "2")
        }
        await #expect(throws: CancellationError.self) { _ = try await started.value }
        #expect(await pool.status().first?.waiting == 0)
        await pool.release(first, method: "echo", affinityKey: nil, outcome: .completed, lifecycle: LifecyclePolicy())
        await pool.shutdown()
    }

    @Test func shutdownWakesEveryWaiterWithAnError() async throws {
        let driver = FakeDriver()
        let pool = pool(driver)
        _ = try await acquire(pool, "1")
        let waiting = (2...4).map { index in Task { try await acquire(pool, "\(index)") } }
        #expect(try await until(pool) { $0.waiting == 3 }?.waiting == 3)
        await pool.shutdown()
        for waiter in waiting {
            await #expect(throws: PoolError.shutDown) { _ = try await waiter.value }
        }
        #expect(driver.destroyed == driver.made, "made \(driver.made), destroyed \(driver.destroyed)")
    }

    @Test func aFullLineRefusesAtOnce() async throws {
        let driver = FakeDriver()
        let pool = pool(driver)
        _ = try await acquire(pool, "1")
        let waiter = Task { try await pool.acquire(request("2"), policy: SaturationGateTests.FirstCandidate(), maxWaiting: 1) }
        #expect(try await until(pool) { $0.waiting == 1 }?.waiting == 1)
        await #expect(throws: PoolError.saturated(profile: "small", waiting: 1)) {
            _ = try await pool.acquire(request("3"), policy: SaturationGateTests.FirstCandidate(), maxWaiting: 1)
        }
        waiter.cancel()
        _ = try? await waiter.value
        await pool.shutdown()
    }

    @Test func theServiceProvisionsToTheIdleTargetAndDestroysEverythingAtTheEnd() async throws {
        let driver = FakeDriver()
        let pool = pool(driver, minIdle: 2, maxTotal: 3)
        async let running: Void = pool.run()
        await pool.replenish()
        #expect(try await until(pool) { $0.idle == 2 }?.idle == 2)
        let lease = try await acquire(pool, "1")
        #expect(!lease.cold, "an idle VM was there")
        // Lent one of two: replenishing (the maintainer's tick) has the service bring the idle
        // count back to its target.
        await pool.replenish()
        #expect(try await until(pool) { $0.idle == 2 && $0.busy == 1 }?.idle == 2)
        await pool.shutdown()
        try await running
        #expect(driver.made == 3 && driver.destroyed == 3, "made \(driver.made), destroyed \(driver.destroyed)")
    }

    @Test func aCrashedVMIsDestroyedAndTheNextInvocationGetsAFreshOne() async throws {
        let driver = FakeDriver()
        let pool = pool(driver, maxTotal: 2)
        let crashed = try await acquire(pool, "1")
        await pool.release(crashed, method: "echo", affinityKey: nil, outcome: .crashed, lifecycle: LifecyclePolicy(destroyOnCrash: true))
        #expect(driver.destroyed == 1, "the tainted VM is destroyed, not reset")
        let next = try await acquire(pool, "2")
        #expect(next.vm.id != crashed.vm.id && next.cold)
        await pool.shutdown()
    }

    /// An invocation placed again after its batch ended before its call counted as an arrival
    /// the first time; the demand that sizes the pool must not count it twice.
    @Test func anInvocationPlacedAgainIsNotASecondArrival() async throws {
        let pool = pool(FakeDriver())
        func arrivalsPerSecond() async -> Double { await pool.status().first?.arrivalsPerSecond ?? -1 }
        func placeAndRelease(_ request: PlacementRequest) async throws {
            let lease = try await pool.acquire(request, policy: SaturationGateTests.FirstCandidate(), maxWaiting: 8).lease
            await pool.release(lease, method: "echo", affinityKey: nil, outcome: .completed, lifecycle: LifecyclePolicy())
        }
        try await placeAndRelease(request("1"))
        let once = await arrivalsPerSecond()
        #expect(once > 0)
        var again = request("1")
        again.placedAgain = true
        try await placeAndRelease(again)
        #expect(await arrivalsPerSecond() == once)
        try await placeAndRelease(request("2"))
        #expect(await arrivalsPerSecond() == 2 * once)
        await pool.shutdown()
    }

    @Test func anIdleVMAboveTheTargetGoesOnlyAfterItsTTL() async throws {
        let driver = FakeDriver()
        let pool = VMPool(
            driver: driver, backend: .process, profiles: [PoolProfile(vm: .small, minIdle: 0, maxIdle: 0, maxTotal: 2)],
            sizer: PoolSizer(limits: PoolLimits()), idleTTL: .seconds(10),
            host: {
                HostSample(cpuUtilization: 0.1, cpuCount: 2, memoryTotalMB: 24_000, memoryAvailableMB: 20_000,
                           memoryPressure: 0, networkReceiveBps: 0, networkTransmitBps: 0)
            },
            observer: SaturationGateTests.Silent(), logger: logger)
        let lease = try await acquire(pool, "1")
        await pool.release(lease, method: "echo", affinityKey: nil, outcome: .completed, lifecycle: LifecyclePolicy())
        #expect(try await until(pool) { $0.idle == 1 }?.idle == 1)
        // The sizing loop's clock, injected: within the TTL the VM stays, past it it goes.
        await pool.resize(now: .now + .seconds(5))
        #expect(await pool.status().first?.idle == 1)
        await pool.resize(now: .now + .seconds(11))
        #expect(await pool.status().first?.idle == 0)
        #expect(driver.destroyed == 1)
        await pool.shutdown()
    }

    @Test func aVMWhoseResetFailsIsDestroyedNotReturned() async throws {
        let driver = FakeDriver(failingResets: true)
        let pool = pool(driver, maxTotal: 2)
        let lease = try await acquire(pool, "1")
        await pool.release(lease, method: "echo", affinityKey: nil, outcome: .completed, lifecycle: LifecyclePolicy())
        #expect(driver.destroyed == 1, "a VM that could not be reset went back to the pool")
        #expect(await pool.status().first?.idle == 0)
        await pool.shutdown()
    }

    @Test func aSmallInvocationWaitingBorrowsALargeVMThatComesFreeOverItsTarget() async throws {
        let large = VMProfile(name: "large", vcpus: 2, memoryMB: 256)
        let driver = FakeDriver()
        let pool = VMPool(
            driver: driver, backend: .process,
            profiles: [PoolProfile(vm: .small, minIdle: 0, maxIdle: 0, maxTotal: 1), PoolProfile(vm: large, minIdle: 0, maxIdle: 0, maxTotal: 2)],
            sizer: PoolSizer(limits: PoolLimits()),
            host: {
                HostSample(cpuUtilization: 0.1, cpuCount: 2, memoryTotalMB: 24_000, memoryAvailableMB: 20_000,
                           memoryPressure: 0, networkReceiveBps: 0, networkTransmitBps: 0)
            },
            observer: SaturationGateTests.Silent(), logger: logger)
        let policy = SaturationGateTests.FirstCandidate()
        let big = try await pool.acquire(PlacementRequest(invocationID: "1", method: "big", profile: "large"), policy: policy, maxWaiting: 8).lease
        let small = try await acquire(pool, "2")
        #expect(small.profile.name == "small" && small.cold, "no large VM was idle to borrow")
        // The small profile is full: the next small invocation waits.
        let waiter = Task { try await acquire(pool, "3") }
        #expect(try await until(pool) { $0.waiting == 1 }?.waiting == 1)

        // The large VM comes back above its target of 0: the small invocation is woken and borrows it.
        await pool.release(big, method: "big", affinityKey: nil, outcome: .completed, lifecycle: LifecyclePolicy())
        let borrowed = try await waiter.value
        #expect(borrowed.vm.id == big.vm.id && borrowed.profile.name == "large" && !borrowed.cold)
        #expect(driver.made == 2, "a VM was provisioned rather than borrowed")

        // It goes back to its own profile.
        await pool.release(borrowed, method: "echo", affinityKey: nil, outcome: .completed, lifecycle: LifecyclePolicy())
        let idle = await pool.status().map { "\($0.profile)=\($0.idle)" }
        #expect(idle == ["large=1", "small=0"], "idle: \(idle)")
        await pool.release(small, method: "echo", affinityKey: nil, outcome: .completed, lifecycle: LifecyclePolicy())
        await pool.shutdown()
    }
}
