import Foundation
import KilnAMQP
import KilnClient
import KilnWire
import Logging

/// The producer side of the benchmarks: `KilnClient`, as a Swift producer would use it, calling
/// one method with the same args every time.
final class BenchClient: Sendable {
    let method: String
    /// The invocations' args.
    let args: MessagePackValue
    private let kiln: KilnClient

    init(url: String, names: KilnNames, method: String, args: MessagePackValue = .map([])) async throws {
        self.method = method
        self.args = args
        kiln = try await KilnClient.connect(url: url, prefix: names.prefix, connectionName: "kiln-bench producer",
                                            logger: Logger(label: "kiln-bench") { _ in SwiftLogNoOpLogHandler() })
    }

    /// One invocation, submitted and waited for: microseconds from submit to result, and the
    /// result (the broker's confirm is awaited alongside, as `invoke` does).
    func roundTrip() async throws -> (Double, InvocationResult) {
        let start = ContinuousClock.now
        let result = try await kiln.invoke(method, args: args, timeout: .seconds(120))
        return ((ContinuousClock.now - start).microseconds, result)
    }

    /// `count` invocations submitted at once (256 publishing lanes): seconds from the first
    /// submit to the last result.
    func burst(_ count: Int) async throws -> (Double, [InvocationResult]) {
        let start = ContinuousClock.now
        let results = try await withThrowingTaskGroup(of: [InvocationResult].self) { group in
            for lane in 0..<min(256, count) {
                group.addTask {
                    var pending: [PendingResult] = []
                    for _ in stride(from: lane, to: count, by: 256) { pending.append(try await self.kiln.submit(self.method, args: self.args)) }
                    var results: [InvocationResult] = []
                    for item in pending { results.append(try await item.result(timeout: .seconds(600))) }
                    return results
                }
            }
            return try await group.reduce(into: []) { $0 += $1 }
        }
        guard results.count == count else { throw BenchmarkError("\(count - results.count) of \(count) results did not come back") }
        return ((ContinuousClock.now - start).seconds, results)
    }

    func close() async {
        await kiln.close()
    }
}
