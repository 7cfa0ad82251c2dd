import Foundation
import KilnVM
import KilnWire
import Logging

/// What the integration tests share: the checkout's guest image (`make image` builds it; `make
/// test` does so before `swift test`), one QEMU driver and one process driver per test process
/// (so the snapshot template is built once), and helpers to make requests.
enum Fixture {
    static let repositoryRoot = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent().path

    static let logger: Logger = {
        var logger = Logger(label: "kiln-vm-tests")
        logger.logLevel = ProcessInfo.processInfo.environment["KILN_TEST_LOG"] == "debug" ? .debug : .warning
        return logger
    }()

    /// The image, or an error telling how to build it.
    static func image() throws -> GuestImage {
        try GuestImage.current(repositoryRoot: repositoryRoot)
    }

    private static let qemuDriver: Result<QEMUDriver, any Error> = Result {
        try QEMUDriver(image: try image(), configuration: qemuConfiguration, logger: logger)
    }

    /// The default driver's, with the host's limits as hang guards: on a loaded CI host four
    /// tests' guests share two emulated cores, a template's Python runtimes took over half a
    /// minute to import there (they take seconds alone), and a guest that ended a method at its
    /// 300 ms deadline did not answer within the default 5 s grace. The tests about deadlines
    /// check that the agent ended the method (its answer says so), which a long grace leaves
    /// intact; the host's own give-up is tested with a driver of its own (QEMUDriverTests).
    static var qemuConfiguration: QEMUDriver.Configuration {
        var configuration = QEMUDriver.Configuration()
        configuration.timeouts.boot = .seconds(300)
        configuration.timeouts.restore = .seconds(60)
        configuration.timeouts.save = .seconds(120)
        configuration.timeouts.request = .seconds(60)
        configuration.timeouts.execGrace = .seconds(60)
        return configuration
    }

    /// The QEMU driver every test in this process shares.
    static func qemu() throws -> QEMUDriver { try qemuDriver.get() }

    private static let processDriver: Result<ProcessSandboxDriver, any Error> = Result {
        var configuration = ProcessSandboxDriver.Configuration()
        configuration.start = .seconds(60)
        configuration.request = .seconds(60)
        configuration.execGrace = .seconds(60)
        return try ProcessSandboxDriver(image: try image(), configuration: configuration, logger: logger)
    }

    /// The process-sandbox driver every test in this process shares.
    static func process() throws -> ProcessSandboxDriver { try processDriver.get() }

    /// The MessagePack map `{args, context}` a method reads on stdin.
    static func payload(_ args: MessagePackValue, context: MessagePackValue = .nil) throws -> [UInt8] {
        var entries: [(key: MessagePackValue, value: MessagePackValue)] = [(key: "args", value: args)]
        if context != .nil { entries.append((key: "context", value: context)) }
        return try MessagePackEncoder().encode(MessagePackValue.map(entries))
    }

    /// An exec request for an example method (entry from the image's manifest).
    /// A deadline no loaded host misses: tests about deadlines give their own, short ones.
    static let generousDeadlineMs: UInt64 = 60_000
    /// The hang guard of a test whose method does hundreds of forks or megabytes of copying: in
    /// an emulated guest sharing two loaded cores with three other tests' VMs that took CI over
    /// a minute, where it takes seconds alone.
    static let heavyWorkDeadlineMs: UInt64 = 300_000

    static func request(_ method: String, _ args: MessagePackValue = .map([]), deadlineMs: UInt64 = generousDeadlineMs,
                        image: GuestImage) throws -> GuestFrame.ExecRequest {
        guard let entry = image.manifest.guestEntry(for: method) else {
            throw VMError.imageMissing(path: image.directory, hint: "the image has no method \(method)")
        }
        return GuestFrame.ExecRequest(id: "t-\(UUID().uuidString.prefix(8))", method: method, entry: entry,
                                      payload: try payload(args), deadlineMs: deadlineMs)
    }

    /// A request that runs a shell command in the guest (busybox sh).
    static func shell(_ script: String, deadlineMs: UInt64 = generousDeadlineMs, resetAfter: Bool = false) -> GuestFrame.ExecRequest {
        GuestFrame.ExecRequest(id: "sh-\(UUID().uuidString.prefix(8))", method: "shell",
                               entry: ["/bin/sh", "-c", script], payload: [], deadlineMs: deadlineMs, resetAfter: resetAfter)
    }

    /// The `output` of a method's answer.
    static func output(of result: GuestFrame.ExecResult) throws -> MessagePackValue? {
        try MessagePackDecoder().decodeValue(from: result.output)["output"]
    }
}

/// The two backends, for tests that must hold for both.
enum Backend: String, CaseIterable, Sendable, CustomStringConvertible {
    case qemu
    case process

    var description: String { rawValue }

    /// A fresh VM of `profile`: restored from its snapshot template (qemu), or booted when
    /// `boot` (a profile used once is not worth a template), or a new sandbox (process).
    func provision(_ profile: VMProfile = .small, boot: Bool = false) async throws -> any MicroVM {
        switch self {
        case .qemu: return boot ? try await Fixture.qemu().boot(profile) : try await Fixture.qemu().restore(profile)
        case .process: return try await Fixture.process().start(profile)
        }
    }

    /// The host PID of a VM's main process.
    func pid(of vm: any MicroVM) -> Int32 {
        switch vm {
        case let vm as QEMUMicroVM: return vm.process.pid
        case let vm as ProcessMicroVM: return vm.process.pid
        default: return -1
        }
    }

    /// A VM's folder in the run directory.
    func directory(of vm: any MicroVM) -> String {
        switch vm {
        case let vm as QEMUMicroVM: return vm.directory
        case let vm as ProcessMicroVM: return vm.directory
        default: return ""
        }
    }

    /// Sends raw bytes to a VM's agent and returns its answer.
    func raw(_ bytes: [UInt8], to vm: any MicroVM) async throws -> GuestFrame {
        switch vm {
        case let vm as QEMUMicroVM: return try await vm.rawRequest(bytes)
        case let vm as ProcessMicroVM: return try await vm.rawRequest(bytes)
        default: throw VMError.unsupported("raw requests to \(type(of: vm))")
        }
    }
}

/// Runs `body` with a fresh VM (restored from `profile`'s template, or booted with the profile
/// given as `booting`) and destroys it afterwards, whatever happens.
func withVM<T>(_ backend: Backend, profile: VMProfile = .small, booting: VMProfile? = nil,
               _ body: (any MicroVM) async throws -> T) async throws -> T {
    let vm = try await backend.provision(booting ?? profile, boot: booting != nil)
    do {
        let result = try await body(vm)
        await vm.destroy()
        return result
    } catch {
        await vm.destroy()
        throw error
    }
}

/// True while a process with `pid` exists.
func processExists(_ pid: Int32) -> Bool {
    kill(pid, 0) == 0 || errno != ESRCH
}
