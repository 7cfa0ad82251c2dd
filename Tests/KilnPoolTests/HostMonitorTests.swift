import Foundation
import KilnPool
import Testing

@Suite("Host monitor")
struct HostMonitorTests {
    /// A fake /proc with the counters given.
    func procRoot(cpu: String, net: String, available: Int, psi: String?) throws -> String {
        let root = FileManager.default.temporaryDirectory.appendingPathComponent("kiln-proc-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: root.appendingPathComponent("net"), withIntermediateDirectories: true)
        try FileManager.default.createDirectory(at: root.appendingPathComponent("pressure"), withIntermediateDirectories: true)
        try "cpu  \(cpu)\ncpu0 1 0 1 1 0 0 0 0 0 0\ncpu1 1 0 1 1 0 0 0 0 0 0\nintr 1\n"
            .write(to: root.appendingPathComponent("stat"), atomically: true, encoding: .utf8)
        try "Inter-|   Receive |  Transmit\n face |bytes packets|bytes\n    lo: 999999 1 0 0 0 0 0 0 999999 1 0 0 0 0 0 0\n  eth0: \(net)\n"
            .write(to: root.appendingPathComponent("net/dev"), atomically: true, encoding: .utf8)
        try "MemTotal:       24576000 kB\nMemFree:  100 kB\nMemAvailable:   \(available) kB\n"
            .write(to: root.appendingPathComponent("meminfo"), atomically: true, encoding: .utf8)
        if let psi {
            try psi.write(to: root.appendingPathComponent("pressure/memory"), atomically: true, encoding: .utf8)
        }
        return root.path
    }

    @Test func ratesComeFromTheDifferenceOfTwoReadings() throws {
        let start = ContinuousClock.now
        let before = ProcReader(root: try procRoot(
            cpu: "100 0 100 800 0 0 0 0 0 0", net: "1000 10 0 0 0 0 0 0 500 5 0 0 0 0 0 0", available: 2_048_000, psi: nil))
            .counters(at: start)
        let afterRoot = try procRoot(
            cpu: "250 0 250 1100 0 0 0 0 0 0", net: "3000 20 0 0 0 0 0 0 1500 9 0 0 0 0 0 0", available: 1_024_000,
            psi: "some avg10=12.50 avg60=3.00 avg300=1.00 total=1\nfull avg10=1.00 avg60=0 avg300=0 total=1\n")
        let reader = ProcReader(root: afterRoot)
        let sample = reader.sample(now: reader.counters(at: start + .seconds(2)), previous: before)
        // 300 busy of 600 jiffies.
        #expect(abs(sample.cpuUtilization - 0.5) < 1e-9)
        #expect(sample.cpuCount == 2)
        #expect(sample.memoryAvailableMB == 1_000)
        #expect(sample.memoryTotalMB == 24_000)
        #expect(abs(sample.memoryPressure - 0.125) < 1e-9)
        // Loopback is left out: 2000 bytes in and 1000 out over 2 s.
        #expect(sample.networkReceiveBps == 1_000)
        #expect(sample.networkTransmitBps == 500)
    }

    @Test func readsTheRealHost() {
        let reader = ProcReader()
        let first = reader.counters()
        let sample = reader.sample(now: reader.counters(at: .now + .milliseconds(100)), previous: first)
        #expect(sample.memoryTotalMB > 0)
        #expect(sample.memoryAvailableMB > 0)
        #expect((0...1).contains(sample.cpuUtilization))
        #expect(sample.cpuCount == ProcessInfo.processInfo.activeProcessorCount)
    }
}
