import ArgumentParser
import Foundation
import KilnPool
import KilnWorker
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif

/// `kiln pool status`: what a running worker's pools hold, from its status server.
struct PoolCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "pool", abstract: "Inspect a running worker's VM pools.", subcommands: [Status.self])

    struct Status: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Show each pool: idle, busy, target and its VMs.")

        @OptionGroup var settings: ConfigurationOptions

        @Option(help: "The worker's status server, as host:port or a URL; metrics.listen of the configuration by default.")
        var worker: String?

        @Flag(help: "Print the worker's JSON as it is.")
        var json = false

        func validate() throws {
            if let worker { _ = try PoolCommand.statusURL(worker) }
        }

        func run() async throws {
            let pools = try await PoolCommand.fetch(try PoolCommand.statusURL(worker ?? settings.load().metrics.listen))
            if json {
                let encoder = JSONEncoder()
                encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
                print(String(decoding: try encoder.encode(pools), as: UTF8.self))
                return
            }
            for pool in pools { print(PoolCommand.render(pool)) }
        }
    }

    /// The base URL of a status server given as the configuration writes it (`host:port`, a
    /// host of `0.0.0.0` or none meaning this host) or as a URL.
    static func statusURL(_ address: String) throws -> String {
        if address.hasPrefix("http://") || address.hasPrefix("https://") {
            return String(address.reversed().drop(while: { $0 == "/" }).reversed())
        }
        if address.isEmpty { throw CommandFailure("the worker's status server is off (metrics.listen is empty): give --worker host:port") }
        guard let listen = HostAndPort(address) else {
            throw ValidationError("--worker must be host:port or an http:// URL, not \(address.prefix(80))")
        }
        let host = ["0.0.0.0", "::", "[::]"].contains(listen.host) ? "127.0.0.1" : listen.host
        return "http://\(host):\(listen.port)"
    }

    /// The pools of the worker at `base`.
    static func fetch(_ base: String) async throws -> [PoolStatus] {
        guard let url = URL(string: base + "/pool") else { throw ValidationError("not a URL: \(base.prefix(80))") }
        let data: Data
        do {
            (data, _) = try await URLSession.shared.data(from: url)
        } catch {
            throw CommandFailure("no worker answers at \(base): \(error.localizedDescription)")
        }
        return try JSONDecoder().decode([PoolStatus].self, from: data)
    }

    static func render(_ pool: PoolStatus) -> String {
        var lines = [
            "pool \(pool.profile) (\(pool.backend)): \(pool.idle) idle, \(pool.busy) busy, \(pool.resetting) resetting, "
                + "\(pool.provisioning) provisioning, \(pool.waiting) waiting, \(pool.heldForSaturatedHost) held for the saturated host; "
                + "idle target \(pool.targetIdle) (min \(pool.minIdle), max \(pool.maxTotal) VMs)",
            "  sizing: \(pool.lastSizing)",
        ]
        for vm in pool.vms {
            lines.append("  \(vm.id.padding(toLength: 12, withPad: " ", startingAt: 0)) \(vm.state.padding(toLength: 5, withPad: " ", startingAt: 0)) "
                + "uses \(vm.uses), last \(vm.lastMethod ?? "-"), age \(String(format: "%.0f", vm.ageSeconds)) s")
        }
        return lines.joined(separator: "\n")
    }
}
