import ArgumentParser
import Foundation
import KilnPool
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif

/// `kiln pool status`: what a running worker's pools hold, from its status server.
struct PoolCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "pool", abstract: "Inspect a running worker's VM pools.", subcommands: [Status.self])

    struct Status: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Show each pool: idle, busy, target and its VMs.")

        @Option(help: "The worker's status server (metrics.listen).")
        var worker = "http://127.0.0.1:9464"

        @Flag(help: "Print the worker's JSON as it is.")
        var json = false

        func run() async throws {
            let pools = try await PoolCommand.fetch(worker)
            if json {
                let encoder = JSONEncoder()
                encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
                print(String(decoding: try encoder.encode(pools), as: UTF8.self))
                return
            }
            for pool in pools { print(PoolCommand.render(pool)) }
        }
    }

    /// The pools of the worker at `base`.
    static func fetch(_ base: String) async throws -> [PoolStatus] {
        guard let url = URL(string: base + "/pool") else { throw ValidationError("not a URL: \(base)") }
        let data: Data
        do {
            (data, _) = try await URLSession.shared.data(from: url)
        } catch {
            throw ValidationError("no worker answers at \(base): \(error.localizedDescription)")
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
