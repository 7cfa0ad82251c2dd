@testable import KilnPool
import Testing

@Suite("Provisioning backoff")
struct ProvisionBackoffTests {
    @Test func failuresDoubleTheWaitUpToTheCeilingAndASuccessClearsIt() {
        var backoff = ProvisionBackoff()
        let start = ContinuousClock.now
        #expect(backoff.allows(at: start))
        let waits = (0..<9).map { _ in backoff.failed(at: start) }
        #expect(waits.prefix(6) == [.milliseconds(500), .seconds(1), .seconds(2), .seconds(4), .seconds(8), .seconds(16)])
        #expect(waits.suffix(3).allSatisfy { $0 == ProvisionBackoff.ceiling })
        #expect(backoff.failures == 9)
        #expect(!backoff.allows(at: start + .seconds(29)))
        #expect(backoff.allows(at: start + .seconds(30)))
        backoff.succeeded()
        #expect(backoff.failures == 0 && backoff.allows(at: start))
    }
}
