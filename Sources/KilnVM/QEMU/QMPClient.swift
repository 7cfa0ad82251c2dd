import Foundation
import Glibc

/// QEMU's machine protocol (QMP) over a connected socket: one JSON object per line. Commands
/// are sent one at a time; asynchronous events in between are skipped. Every read is bounded by
/// a deadline on the ``IOReactor``.
actor QMPClient {
    /// The `return` object of a successful command.
    struct Reply: @unchecked Sendable {
        // Immutable JSON object from JSONSerialization.
        let object: [String: Any]

        func string(_ key: String) -> String? { object[key] as? String }
        func integer(_ key: String) -> Int? { (object[key] as? NSNumber)?.intValue }
    }

    private let vmID: String
    private var fd: Int32
    private var buffer: [UInt8] = []
    /// A command is in flight: the next waits its turn, so that no reply is read by another
    /// command's caller (the actor would interleave them at their reads).
    private var busy = false
    private var turns: [CheckedContinuation<Void, Never>] = []
    /// Commands sent so far: the next one's number.
    private var commands = 0

    /// Takes ownership of `fd`.
    init(fd: Int32, vmID: String) {
        self.fd = fd
        self.vmID = vmID
        _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK)
    }

    deinit {
        if fd >= 0 { Glibc.close(fd) }
    }

    /// Reads the greeting and enters command mode.
    func handshake(until deadline: ContinuousClock.Instant) async throws(VMError) {
        let greeting = try await readObject(until: deadline, step: "QMP greeting")
        guard greeting["QMP"] != nil else {
            throw .monitorError(vm: vmID, command: "greeting", detail: "unexpected \(greeting)")
        }
        _ = try await execute("qmp_capabilities", until: deadline)
    }

    /// Runs `command` with `arguments` (a JSON object's text) and returns its reply. Each
    /// command carries a number that QEMU echoes: the late reply of a command that timed out is
    /// skipped, never taken for the next one's.
    @discardableResult
    func execute(_ command: String, arguments: String? = nil, until deadline: ContinuousClock.Instant) async throws(VMError) -> Reply {
        await takeTurn()
        defer { endTurn() }
        commands += 1
        let number = commands
        let line = "{\"execute\":\"\(command)\"" + (arguments.map { ",\"arguments\":\($0)" } ?? "") + ",\"id\":\(number)}\n"
        try await write(Array(line.utf8), until: deadline, step: command)
        while true {
            let object = try await readObject(until: deadline, step: command)
            if object["event"] != nil { continue }
            guard (object["id"] as? NSNumber)?.intValue == number else { continue }
            if let error = object["error"] as? [String: Any] {
                throw .monitorError(vm: vmID, command: command,
                                    detail: "\(error["class"] ?? "?"): \(error["desc"] ?? "?")")
            }
            return Reply(object: object["return"] as? [String: Any] ?? [:])
        }
    }

    private func takeTurn() async {
        guard busy else {
            busy = true
            return
        }
        await withCheckedContinuation { turns.append($0) }
    }

    private func endTurn() {
        if turns.isEmpty { busy = false } else { turns.removeFirst().resume() }
    }

    func close() {
        if fd >= 0 { Glibc.close(fd) }
        fd = -1
    }

    private func write(_ bytes: [UInt8], until deadline: ContinuousClock.Instant, step: String) async throws(VMError) {
        var offset = 0
        while offset < bytes.count {
            guard fd >= 0 else { throw .vmDied(vm: vmID, during: step, detail: "the QMP socket is closed") }
            let written = bytes.withUnsafeBytes { send(fd, $0.baseAddress! + offset, $0.count - offset, Int32(MSG_NOSIGNAL)) }
            if written > 0 {
                offset += written
            } else if errno == EAGAIN {
                try await wait(.writable, until: deadline, step: step)
            } else if errno != EINTR {
                throw .vmDied(vm: vmID, during: step, detail: "QMP write failed: \(String(cString: strerror(errno)))")
            }
        }
    }

    private func readObject(until deadline: ContinuousClock.Instant, step: String) async throws(VMError) -> [String: Any] {
        while true {
            if let newline = buffer.firstIndex(of: UInt8(ascii: "\n")) {
                let line = Array(buffer[..<newline])
                buffer.removeFirst(newline + 1)
                guard !line.isEmpty else { continue }
                guard let object = (try? JSONSerialization.jsonObject(with: Data(line))) as? [String: Any] else {
                    throw .monitorError(vm: vmID, command: step, detail: "unreadable reply: \(String(decoding: line, as: UTF8.self))")
                }
                return object
            }
            guard fd >= 0 else { throw .vmDied(vm: vmID, during: step, detail: "the QMP socket is closed") }
            var chunk = [UInt8](repeating: 0, count: 8192)
            let count = chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if count > 0 {
                buffer.append(contentsOf: chunk[0..<count])
            } else if count == 0 {
                throw .vmDied(vm: vmID, during: step, detail: "QEMU closed its monitor")
            } else if errno == EAGAIN {
                try await wait(.readable, until: deadline, step: step)
            } else if errno != EINTR {
                throw .vmDied(vm: vmID, during: step, detail: "QMP read failed: \(String(cString: strerror(errno)))")
            }
        }
    }

    private func wait(_ readiness: IOReactor.Readiness, until deadline: ContinuousClock.Instant, step: String) async throws(VMError) {
        do {
            try await IOReactor.shared.wait(for: fd, readiness, until: deadline)
        } catch {
            throw .timedOut(vm: vmID, step: "QMP \(step)", after: .zero, detail: "\(error)")
        }
    }
}
