import ArgumentParser
import Foundation
import KilnAMQP
import Logging

/// `kiln-bench amqp`: confirmed publishing and acknowledged consuming through KilnAMQP beside
/// pika (Benchmarks/pika_amqp.py) on the same broker, in the same run.
struct AMQPBenchmark: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "amqp",
        abstract: "Publish with confirms and consume with acks: KilnAMQP against pika."
    )

    @Option(help: "The broker (`make broker-start` runs one on 127.0.0.1).")
    var url = "amqp://guest:guest@127.0.0.1:5672/%2f"

    @Option(help: "Messages per row (a quarter for window 1 and prefetch 1).")
    var count = 20_000

    @Option(help: "Rounds per row; the best is kept.")
    var rounds = 3

    @Option(help: "Python with pika (Tests/interop/venv.sh makes one).")
    var python = ".local/venv/bin/python"

    @Flag(help: "Measure KilnAMQP only (for profiling).")
    var kilnOnly = false

    func run() async throws {
        guard kilnOnly || FileManager.default.isExecutableFile(atPath: python) else {
            throw BenchmarkError("no Python with pika at \(python): run Tests/interop/venv.sh")
        }
        let logger = Logger(label: "kiln-bench") { _ in SwiftLogNoOpLogHandler() }
        var configuration = try AMQPConfiguration(url: url)
        configuration.connectionName = "kiln-bench"
        let queue = "kiln-bench-\(UUID().uuidString.prefix(8))"
        let admin = AMQPConnection(configuration: configuration, publishWindow: 1_000, logger: logger)
        try await admin.connect()
        let topology = AMQPTopology(queues: [.init(name: queue, durable: false)])
        try await admin.declare(topology)
        defer { Task { try? await admin.deleteQueue(queue); await admin.close() } }

        print("kiln-bench amqp: \(count) messages of 100 bytes per row, best of \(rounds) rounds, broker at \(configuration.redactedURL)")
        var table = TextTable("row", "KilnAMQP msgs/s", "on its thread", "pika msgs/s", "ratio", "on its thread")
        // Each KilnAMQP row runs twice, in alternating order: with the tasks on the global
        // executor, and on the connection's own thread (`AMQPConnectionExecutor`), which saves a
        // thread wake per hand-off.
        for window in [1, 100, 1_000] {
            let messages = window == 1 ? count / 4 : count
            var rates = (kiln: 0.0, onThread: 0.0, pika: 0.0)
            for round in 0..<rounds {
                for onThread in round.isMultiple(of: 2) ? [false, true] : [true, false] {
                    try await purge(queue, on: admin, topology: topology)
                    let rate = try await publishRate(
                        configuration, queue: queue, count: messages, window: window, onConnectionThread: onThread, logger: logger)
                    if onThread { rates.onThread = max(rates.onThread, rate) } else { rates.kiln = max(rates.kiln, rate) }
                }
                guard !kilnOnly else { continue }
                try await purge(queue, on: admin, topology: topology)
                rates.pika = max(rates.pika, try peer("publish", queue: queue, count: messages, parameter: window))
            }
            table.add("publish, confirm window \(window)", formatted(rates.kiln), formatted(rates.onThread), formatted(rates.pika),
                      formatted(rates.kiln / rates.pika, decimals: 2) + "x", formatted(rates.onThread / rates.pika, decimals: 2) + "x")
        }
        for prefetch in [1, 100, 1_000] {
            let messages = prefetch == 1 ? count / 4 : count
            var rates = (kiln: 0.0, onThread: 0.0, pika: 0.0)
            for round in 0..<rounds {
                for onThread in round.isMultiple(of: 2) ? [false, true] : [true, false] {
                    try await refill(queue, on: admin, topology: topology, count: messages)
                    let rate = try await consumeRate(
                        configuration, queue: queue, count: messages, prefetch: prefetch, onConnectionThread: onThread, logger: logger)
                    if onThread { rates.onThread = max(rates.onThread, rate) } else { rates.kiln = max(rates.kiln, rate) }
                }
                guard !kilnOnly else { continue }
                try await refill(queue, on: admin, topology: topology, count: messages)
                rates.pika = max(rates.pika, try peer("consume", queue: queue, count: messages, parameter: prefetch))
            }
            table.add("consume + ack, prefetch \(prefetch)", formatted(rates.kiln), formatted(rates.onThread), formatted(rates.pika),
                      formatted(rates.kiln / rates.pika, decimals: 2) + "x", formatted(rates.onThread / rates.pika, decimals: 2) + "x")
        }
        try await purge(queue, on: admin, topology: topology)
        let kilnLatency = try await hopLatency(configuration, queue: queue, count: count / 20, logger: logger)
        try await purge(queue, on: admin, topology: topology)
        let kilnLatencyOnThread = try await hopLatency(
            configuration, queue: queue, count: count / 20, onReceiverThread: true, logger: logger)
        var latencyTable = TextTable(
            "one message, publish to delivery on another connection", "KilnAMQP p50 µs", "on its thread", "pika p50 µs", "ratio",
            "on its thread")
        if !kilnOnly {
            try await purge(queue, on: admin, topology: topology)
            let pika = try peer("latency", queue: queue, count: count / 20, parameter: 0)
            latencyTable.add("sequential, \(count / 20) messages", formatted(kilnLatency), formatted(kilnLatencyOnThread), formatted(pika),
                             formatted(pika / kilnLatency, decimals: 2) + "x", formatted(pika / kilnLatencyOnThread, decimals: 2) + "x")
        } else {
            latencyTable.add("sequential, \(count / 20) messages", formatted(kilnLatency), formatted(kilnLatencyOnThread), "-", "-", "-")
        }
        try await admin.deleteQueue(queue)
        print(table.render())
        print("")
        print(latencyTable.render())
    }

    /// The median time from publishing a message to its delivery to a consumer on another
    /// connection, one message at a time, in microseconds; with `onReceiverThread`, the task
    /// runs on the receiving connection's executor.
    private func hopLatency(
        _ configuration: AMQPConfiguration, queue: String, count: Int, onReceiverThread: Bool = false, logger: Logger
    ) async throws -> Double {
        let publisher = AMQPConnection(configuration: configuration, publishWindow: 1, logger: logger)
        let receiver = AMQPConnection(configuration: configuration, logger: logger)
        try await publisher.connect()
        try await receiver.connect()
        let consumer = try await receiver.consume(queue: queue, prefetch: 10)
        let samples = try await withTaskExecutorPreference(onReceiverThread ? receiver.executor : nil) {
            var deliveries = consumer.makeAsyncIterator()
            let body = [UInt8](repeating: 0x78, count: 100)
            var samples: [Double] = []
            for round in 0..<(count + 50) {
                let start = ContinuousClock.now
                async let confirmed: Void = publisher.publish(AMQPMessage(exchange: "", routingKey: queue, body: body))
                guard let delivery = try await deliveries.next() else { throw BenchmarkError("the consumer ended") }
                let elapsed = (ContinuousClock.now - start).microseconds
                try delivery.ack()
                try await confirmed
                if round >= 50 { samples.append(elapsed) }
            }
            return samples
        }
        await receiver.close(grace: .zero)
        await publisher.close(grace: .zero)
        return Summary(samples).median
    }

    private func purge(_ queue: String, on admin: AMQPConnection, topology: AMQPTopology) async throws {
        try await admin.deleteQueue(queue)
        try await admin.declare(topology)
    }

    private func refill(_ queue: String, on admin: AMQPConnection, topology: AMQPTopology, count: Int) async throws {
        try await purge(queue, on: admin, topology: topology)
        try await publishAll(admin, queue: queue, count: count, lanes: 1_000)
    }

    private func publishAll(_ connection: AMQPConnection, queue: String, count: Int, lanes: Int) async throws {
        let body = [UInt8](repeating: 0x78, count: 100)
        try await withThrowingTaskGroup(of: Void.self) { group in
            for lane in 0..<min(lanes, count) {
                group.addTask {
                    for _ in stride(from: lane, to: count, by: lanes) {
                        try await connection.publish(AMQPMessage(exchange: "", routingKey: queue, body: body))
                    }
                }
            }
            try await group.waitForAll()
        }
    }

    /// Confirmed publishes per second with at most `window` unconfirmed; with
    /// `onConnectionThread`, the publishing tasks run on the connection's executor.
    private func publishRate(
        _ configuration: AMQPConfiguration, queue: String, count: Int, window: Int, onConnectionThread: Bool = false,
        logger: Logger
    ) async throws -> Double {
        let connection = AMQPConnection(configuration: configuration, publishWindow: window, logger: logger)
        try await connection.connect()
        let start = ContinuousClock.now
        try await withTaskExecutorPreference(onConnectionThread ? connection.executor : nil) {
            try await publishAll(connection, queue: queue, count: count, lanes: window)
        }
        let elapsed = (ContinuousClock.now - start).seconds
        await connection.close()
        return Double(count) / elapsed
    }

    /// Deliveries consumed and acknowledged per second, from the first delivery to the last;
    /// with `onConnectionThread`, the consuming task runs on the connection's executor.
    private func consumeRate(
        _ configuration: AMQPConfiguration, queue: String, count: Int, prefetch: Int, onConnectionThread: Bool = false,
        logger: Logger
    ) async throws -> Double {
        let connection = AMQPConnection(configuration: configuration, logger: logger)
        try await connection.connect()
        let consumer = try await connection.consume(queue: queue, prefetch: UInt16(prefetch))
        let (start, end) = try await withTaskExecutorPreference(onConnectionThread ? connection.executor : nil) {
            var received = 0
            var start = ContinuousClock.now
            for try await delivery in consumer {
                try delivery.ack()
                received += 1
                if received == 1 { start = ContinuousClock.now }
                if received == count { break }
            }
            return (start, ContinuousClock.now)
        }
        let elapsed = (end - start).seconds
        await connection.close(grace: .seconds(1))
        return Double(count - 1) / elapsed
    }

    private func peer(_ command: String, queue: String, count: Int, parameter: Int) throws -> Double {
        let (status, output) = try runToCompletion(python, ["Benchmarks/pika_amqp.py", command, url, queue, String(count), String(parameter)])
        guard status == 0, let rate = Double(output.trimmingCharacters(in: .whitespacesAndNewlines)) else {
            throw BenchmarkError("the pika peer failed (\(status)): \(output)")
        }
        return rate
    }
}
