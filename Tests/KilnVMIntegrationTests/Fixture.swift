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
        var configuration = QEMUDriver.Configuration()
        configuration.templateRoot = repositoryRoot + "/.local/templates"
        return try QEMUDriver(image: try image(), configuration: configuration, logger: logger)
    }

    /// The QEMU driver every test in this process shares.
    static func qemu() throws -> QEMUDriver { try qemuDriver.get() }

    /// The MessagePack map `{args, context}` a method reads on stdin.
    static func payload(_ args: MessagePackValue, context: MessagePackValue = .nil) throws -> [UInt8] {
        var entries: [(key: MessagePackValue, value: MessagePackValue)] = [(key: "args", value: args)]
        if context != .nil { entries.append((key: "context", value: context)) }
        return try MessagePackEncoder().encode(MessagePackValue.map(entries))
    }

    /// An exec request for an example method (entry from the image's manifest).
    static func request(_ method: String, _ args: MessagePackValue = .map([]), deadlineMs: UInt64 = 5_000,
                        image: GuestImage) throws -> GuestFrame.ExecRequest {
        guard let entry = image.manifest.guestEntry(for: method) else {
            throw VMError.imageMissing(path: image.directory, hint: "the image has no method \(method)")
        }
        return GuestFrame.ExecRequest(id: "t-\(UUID().uuidString.prefix(8))", method: method, entry: entry,
                                      payload: try payload(args), deadlineMs: deadlineMs)
    }

    /// A request that runs a shell command in the guest (busybox sh).
    static func shell(_ script: String, deadlineMs: UInt64 = 5_000) -> GuestFrame.ExecRequest {
        GuestFrame.ExecRequest(id: "sh-\(UUID().uuidString.prefix(8))", method: "shell",
                               entry: ["/bin/sh", "-c", script], payload: [], deadlineMs: deadlineMs)
    }

    /// The `output` of a method's answer.
    static func output(of result: GuestFrame.ExecResult) throws -> MessagePackValue? {
        try MessagePackDecoder().decodeValue(from: result.output)["output"]
    }
}
