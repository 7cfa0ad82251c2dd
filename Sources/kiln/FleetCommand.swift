import ArgumentParser
import Foundation
import KilnAMQP
import KilnClient
import KilnWire
import Logging

/// `kiln fleet status`: every worker of a fleet from the samples they publish on
/// `kiln.telemetry`, kept for an hour in the fleet stream.
struct FleetCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "fleet", abstract: "See the workers of a fleet.", subcommands: [Status.self, Forget.self])

    struct Status: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Show every worker that reported lately: host, backend, pools, host load, last seen; gone when it stopped reporting.")

        @OptionGroup var broker: BrokerOptions

        @Option(help: "How far back to look for workers (at most the stream's hour): 90s, 10m, 1h.")
        var since = HumanDuration(.seconds(600))

        @Option(name: .customLong("for"), help: "How long to go on reading new samples (workers send one a second).")
        var window = HumanDuration(.seconds(3))

        @Option(help: "A worker silent for longer than this is shown as gone.")
        var goneAfter = HumanDuration(.seconds(5))

        @Flag(help: "Print each worker as one JSON line.")
        var json = false

        func validate() throws {
            guard since.duration <= .seconds(3_600) else { throw ValidationError("--since: the fleet stream keeps an hour") }
            guard window.duration <= .seconds(600) else { throw ValidationError("--for: at most 10m") }
        }

        func run() async throws {
            Kiln.bootstrapLogging()
            let (endpoints, names) = try broker.endpoints(connectionName: "kiln fleet status")
            let connection = AMQPConnection(endpoints: endpoints, logger: Logger(label: "kiln.fleet"))
            try await connection.connect()
            let view: FleetView
            do {
                view = try await FleetReader.read(from: connection, names: names, lookBack: since.duration, window: window.duration)
            } catch AMQPError.channelClosed(404, _) {
                await connection.close(grace: .seconds(1))
                throw CommandFailure(
                    "the broker at \(endpoints[0].redactedURL) has no stream \(names.fleetStream): no worker of this version has declared "
                        + "Kiln's topology with prefix '\(names.prefix)' there (or load deploy/rabbitmq/definitions.json)")
            }
            await connection.close(grace: .seconds(1))
            let now = UInt64(Date().timeIntervalSince1970 * 1_000_000)
            let entries = view.entries(nowUs: now, goneAfterUs: goneAfter.microseconds)
            if json {
                for entry in entries { print(FleetFormatter.jsonLine(entry)) }
                return
            }
            if entries.isEmpty {
                print("no worker reported in the last \(since.description)")
                return
            }
            print(FleetFormatter.header)
            for entry in entries { print(FleetFormatter.row(entry)) }
            let live = entries.filter { $0.state == .live }.count
            print("\(live) live, \(entries.count - live) gone")
        }
    }
}

extension FleetCommand {
    /// `kiln fleet forget HOST`: a host that left the fleet for good gives up its share of
    /// cross-host affinity keys. Its queue is unbound (new keyed invocations hash to the others),
    /// waits until what it holds has gone back to the shared queue (after `affinity.hold_ms`),
    /// and is deleted once empty: nothing is lost.
    struct Forget: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Hand a departed host's cross-host affinity keys to the rest of the fleet (its worker must be stopped).")

        @OptionGroup var broker: BrokerOptions

        @Argument(help: "The host id (worker.host) of the worker that left.")
        var host: String

        @Option(help: "How long to wait for its queue to empty.")
        var timeout = HumanDuration(.seconds(600))

        func run() async throws {
            Kiln.bootstrapLogging()
            let (endpoints, names) = try broker.endpoints(connectionName: "kiln fleet forget")
            let queue = names.workerQueue(host: host)
            let connection = AMQPConnection(endpoints: endpoints, logger: Logger(label: "kiln.fleet"))
            try await connection.connect()
            do {
                try await forget(queue: queue, names: names, on: connection)
                await connection.close(grace: .seconds(1))
            } catch {
                await connection.close(grace: .zero)
                throw error
            }
        }

        private func forget(queue: String, names: KilnNames, on connection: AMQPConnection) async throws {
            let state: AMQPQueueState
            do {
                state = try await connection.queueState(queue)
            } catch AMQPError.channelClosed(404, _) {
                throw CommandFailure("there is no queue \(queue): \(host) never took part in cross-host affinity here, or was forgotten already")
            }
            guard state.consumers == 0 else {
                throw CommandFailure("a worker still consumes \(queue) (\(state.consumers) consumer\(state.consumers == 1 ? "" : "s")): stop the worker on \(host) first")
            }
            try await connection.unbind(AMQPTopology.crossHostAffinity(names, host: host, holdMs: 0).bindings[0])
            print("\(queue) unbound: new keyed invocations hash to the other workers")
            let deadline = ContinuousClock.now + timeout.duration
            var waiting = state.messages
            while waiting > 0 {
                guard ContinuousClock.now < deadline else {
                    throw CommandFailure("\(queue) still holds \(waiting) invocations after \(timeout.description); run this again to wait longer")
                }
                print("waiting for \(waiting) invocations to go back to the shared queue")
                try await Task.sleep(for: .milliseconds(500))
                waiting = try await connection.queueState(queue).messages
            }
            // Unbound, without a consumer and empty, nothing can reach it any more (quorum queues
            // do not take queue.delete's if-empty).
            try await connection.deleteQueue(queue)
            print("forgot \(host): its queue is deleted, its keys belong to the other workers")
        }
    }
}

/// A duration given as people write one: `500ms`, `3s`, `10m`, `1h`, or a number of seconds.
struct HumanDuration: ExpressibleByArgument, CustomStringConvertible, Sendable {
    let duration: Duration
    let description: String

    var microseconds: UInt64 {
        UInt64(duration.components.seconds) * 1_000_000 + UInt64(duration.components.attoseconds / 1_000_000_000_000)
    }

    init(_ duration: Duration) {
        self.duration = duration
        self.description = "\(duration.components.seconds)s"
    }

    init?(argument: String) {
        let units: [(suffix: String, seconds: Double)] = [("ms", 0.001), ("s", 1), ("m", 60), ("h", 3_600)]
        let unit = units.first { argument.hasSuffix($0.suffix) && Double(argument.dropLast($0.suffix.count)) != nil }
        guard let number = Double(unit.map { String(argument.dropLast($0.suffix.count)) } ?? argument),
              number.isFinite, number >= 0, number * (unit?.seconds ?? 1) <= 86_400 else { return nil }
        duration = .milliseconds(Int64((number * (unit?.seconds ?? 1) * 1_000).rounded()))
        description = argument
    }
}

/// How a fleet looks on a terminal.
enum FleetFormatter {
    static let header = pad("host", 16) + " " + pad("worker", 24) + " " + pad("backend", 8) + " " + pad("state", 5) + " "
        + lpad("last seen", 10) + " " + lpad("cpu", 5) + " " + lpad("mem free", 9) + " " + lpad("net rx/tx", 15) + "  pools idle/busy/target"

    static func row(_ entry: FleetView.Entry) -> String {
        let worker = entry.worker
        let sample = worker.sample
        let pools = sample.pools.map { pools in pools.map { "\($0.profile) \($0.idle)/\($0.busy)/\($0.target)" }.joined(separator: ", ") }
            ?? "\(sample.vmsIdle) idle, \(sample.vmsBusy) busy"
        return pad(worker.host, 16) + " " + pad(worker.worker, 24) + " " + pad(sample.backend ?? "-", 8) + " " + pad(entry.state.rawValue, 5) + " "
            + lpad(ago(entry.silentForUs), 10) + " " + lpad("\(Int((sample.cpuUtil * 100).rounded()))%", 5) + " "
            + lpad("\(sample.memAvailableMB) MB", 9) + " " + lpad(bytes(sample.netRxBps) + "/" + bytes(sample.netTxBps), 15) + "  " + pools
    }

    static func jsonLine(_ entry: FleetView.Entry) -> String {
        let sample = entry.worker.sample
        let object: [String: Any] = [
            "host": entry.worker.host, "worker": entry.worker.worker, "state": entry.state.rawValue,
            "backend": sample.backend ?? NSNull(), "last_seen_us": entry.worker.lastSeenUs, "silent_for_us": entry.silentForUs,
            "cpu_util": sample.cpuUtil, "mem_available_mb": sample.memAvailableMB, "mem_pressure": sample.memPressure,
            "net_rx_bps": sample.netRxBps, "net_tx_bps": sample.netTxBps, "vms_idle": sample.vmsIdle, "vms_busy": sample.vmsBusy,
            "pools": (sample.pools ?? []).map { ["profile": $0.profile, "idle": $0.idle, "busy": $0.busy, "target": $0.target] as [String: Any] },
        ]
        let data = (try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys])) ?? Data("{}".utf8)
        return String(decoding: data, as: UTF8.self)
    }

    static func ago(_ us: UInt64) -> String {
        us < 60_000_000 ? String(format: "%.1f s", Double(us) / 1e6) : "\(us / 60_000_000) min"
    }

    static func bytes(_ perSecond: UInt64) -> String {
        perSecond < 1_000 ? "\(perSecond)" : perSecond < 1_000_000 ? "\(perSecond / 1_000)k" : "\(perSecond / 1_000_000)M"
    }

    static func pad(_ text: String, _ width: Int) -> String { ResultFormatter.pad(text, width) }

    static func lpad(_ text: String, _ width: Int) -> String { ResultFormatter.lpad(text, width) }
}
