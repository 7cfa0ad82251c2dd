import ArgumentParser
import Foundation
import KilnVM
import Logging

/// `kiln-bench exit-probe`: provisions VMs and then ends without destroying them, so that a test
/// can check that nothing outlives the process — whether it exits (the exit hook kills and
/// removes) or is killed outright (children die by PDEATHSIG; the next run sweeps the files).
struct ExitProbe: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "exit-probe", abstract: "Test helper: leave VMs running and exit.", shouldDisplay: false)

    @Option var backend = "qemu"
    @Option var image = ".local/images/current"
    @Option var templates: String?
    @Option var count = 2
    @Flag(help: "Wait to be killed instead of exiting.") var wait = false

    func run() async throws {
        var logger = Logger(label: "kiln-exit-probe")
        logger.logLevel = .error
        let guestImage = try GuestImage.open(directory: image)
        var vms: [any MicroVM] = []
        if backend == "qemu" {
            var configuration = QEMUDriver.Configuration()
            configuration.templateRoot = templates
            let driver = try QEMUDriver(image: guestImage, configuration: configuration, logger: logger)
            for _ in 0..<count { vms.append(try await driver.restore(.small)) }
            for case let vm as QEMUMicroVM in vms { say("vm \(vm.id) \(vm.process.pid) \(vm.directory)") }
        } else {
            let driver = try ProcessSandboxDriver(image: guestImage, logger: logger)
            for _ in 0..<count { vms.append(try await driver.start(.small)) }
            for case let vm as ProcessMicroVM in vms { say("vm \(vm.id) \(vm.process.pid) \(vm.directory)") }
        }
        say("ready")
        if wait {
            while true { try await Task.sleep(for: .seconds(1)) }
        }
        withExtendedLifetime(vms) {}
        Foundation.exit(0)
    }

    /// Writes a line to stdout at once (the test reads it through a pipe).
    private func say(_ line: String) {
        FileHandle.standardOutput.write(Data((line + "\n").utf8))
    }
}
