import KilnPool
import Testing

@Suite("Pool sizing")
struct PoolSizerTests {
    let roomy = HostSample(cpuUtilization: 0.2, cpuCount: 2, memoryTotalMB: 24_000, memoryAvailableMB: 20_000,
                           memoryPressure: 0, networkReceiveBps: 0, networkTransmitBps: 0)

    @Test func noDemandKeepsTheMinimum() {
        let sizer = PoolSizer(limits: PoolLimits(minIdle: 2, maxTotal: 8))
        #expect(sizer.decide(demand: .idle, busy: 0, idle: 0, host: roomy).targetIdle == 2)
    }

    @Test func demandFollowsLittlesLawWithABurstAllowance() {
        let sizer = PoolSizer(limits: PoolLimits(minIdle: 1, maxTotal: 20, burstAllowance: 2))
        // 40/s × 0.1 s = 4 busy on average; + 2 × √4 = 8 in total; 3 busy now → 5 idle.
        let demand = DemandSnapshot(arrivalRate: 40, serviceTime: 0.1, coldStarts: 0, window: 30)
        let decision = sizer.decide(demand: demand, busy: 3, idle: 2, host: roomy)
        #expect(decision.targetIdle == 5)
        #expect(!decision.cappedByHost)
        #expect(decision.reason.hasPrefix("demand 40.0/s x 0.100 s = 4.00 busy"))
        // A forecast burst larger than the steady estimate sets the target.
        let bursty = DemandSnapshot(arrivalRate: 40, serviceTime: 0.1, coldStarts: 2, forecastWarm: 9, forecastReason: "burst", window: 30)
        #expect(sizer.decide(demand: bursty, busy: 3, idle: 2, host: roomy).targetIdle == 9)
        // Cold starts in the window ask for at least as many idle VMs, when demand and forecast ask for fewer.
        let missed = DemandSnapshot(arrivalRate: 0.2, serviceTime: 0.1, coldStarts: 4, window: 30)
        #expect(sizer.decide(demand: missed, busy: 0, idle: 0, host: roomy).targetIdle == 4)
        // Never past the pool's maximum: 400/s × 0.1 s wants 53 VMs, 18 are busy, 20 at most.
        let surge = DemandSnapshot(arrivalRate: 400, serviceTime: 0.1, coldStarts: 0, window: 30)
        #expect(sizer.decide(demand: surge, busy: 18, idle: 2, host: roomy).targetIdle == 2)
    }

    @Test func maxIdleCapsDemandAndForecast() {
        let bursty = DemandSnapshot(arrivalRate: 40, serviceTime: 0.1, coldStarts: 2, forecastWarm: 9, forecastReason: "burst", window: 30)
        let capped = PoolSizer(limits: PoolLimits(minIdle: 1, maxIdle: 3, maxTotal: 20)).decide(demand: bursty, busy: 0, idle: 0, host: roomy)
        #expect(capped.targetIdle == 3)
        #expect(capped.reason.hasSuffix("held at max_idle 3"))
        // 0: no pre-warming at all.
        let off = PoolSizer(limits: PoolLimits(minIdle: 0, maxIdle: 0, maxTotal: 20)).decide(demand: bursty, busy: 0, idle: 0, host: roomy)
        #expect(off.targetIdle == 0)
    }

    @Test func memoryAndCPUReservesCapTheTarget() {
        let sizer = PoolSizer(limits: PoolLimits(minIdle: 1, maxTotal: 50, memoryReserveMB: 1_000, cpuReserveCores: 0.5, memoryPerVMMB: 200))
        let demand = DemandSnapshot(arrivalRate: 100, serviceTime: 0.2, coldStarts: 0, window: 30)
        var tight = roomy
        tight.memoryAvailableMB = 1_700 // room for 3 more VMs of 200 MiB above the reserve
        let memoryBound = sizer.decide(demand: demand, busy: 0, idle: 1, host: tight)
        #expect(memoryBound.targetIdle == 4)
        #expect(memoryBound.cappedByHost)
        #expect(memoryBound.reason.contains("capped by memory"))

        var busyCPU = roomy
        busyCPU.cpuUtilization = 0.9 // 0.2 idle cores of 2
        let cpuBound = sizer.decide(demand: demand, busy: 0, idle: 3, host: busyCPU)
        #expect(cpuBound.targetIdle == 3)
        #expect(cpuBound.reason.contains("held by CPU"))
    }
}
