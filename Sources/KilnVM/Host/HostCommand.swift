import Glibc

/// A short-lived host tool (apt-get, dpkg, xz, ldd, swift): run to completion under a timeout and
/// killed by PID when it misses it. Output is collected through files in a scratch folder, so the
/// reactor is not involved.
public struct HostCommand: Sendable {
    /// What a finished command printed.
    public struct Output: Sendable {
        public var status: ExitStatus
        public var stdout: [UInt8]
        public var stderr: String

        public var stdoutText: String { String(decoding: stdout, as: UTF8.self) }
    }

    public var executable: String
    public var arguments: [String]
    public var workingDirectory: String?
    public var timeout: Duration
    /// Where stdout goes; nil collects it in memory.
    public var stdoutPath: String?
    /// Exit codes that count as success.
    public var acceptedExitCodes: Set<Int32> = [0]

    public init(_ executable: String, _ arguments: [String], in workingDirectory: String? = nil,
                timeout: Duration = .seconds(120), stdoutPath: String? = nil) {
        self.executable = executable
        self.arguments = arguments
        self.workingDirectory = workingDirectory
        self.timeout = timeout
        self.stdoutPath = stdoutPath
    }

    /// Runs the command; throws when it cannot start, times out or exits non-zero.
    @discardableResult
    public func run(scratch: String) async throws(VMError) -> Output {
        guard let path = Self.resolve(executable) else {
            throw .hostFailure("\(executable) not found on PATH; run deploy/local/install-deps.sh")
        }
        let token = "\(getpid())-\(UInt64.random(in: 0...UInt64.max))"
        let outPath = stdoutPath ?? scratch + "/.cmd-\(token).out"
        let errPath = scratch + "/.cmd-\(token).err"
        defer {
            if stdoutPath == nil { unlink(outPath) }
            unlink(errPath)
        }
        let outFD = open(outPath, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        let errFD = open(errPath, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        defer {
            if outFD >= 0 { close(outFD) }
            if errFD >= 0 { close(errFD) }
        }
        guard outFD >= 0, errFD >= 0 else { throw .hostFailure("cannot create output files in \(scratch)") }

        var environment = ProcessEnvironment.current
        environment["LC_ALL"] = "C"
        var spec = SpawnSpec(executable: path, arguments: [executable] + arguments, environment: environment,
                             descriptors: [nil, outFD, errFD])
        if let workingDirectory {
            // kiln_spawn has no chdir: go through env(1)'s --chdir.
            spec = SpawnSpec(executable: Self.resolve("env") ?? "/usr/bin/env",
                             arguments: ["env", "--chdir=\(workingDirectory)", path] + arguments,
                             environment: environment, descriptors: [nil, outFD, errFD])
        }
        let child: ChildProcess
        do {
            child = try await ProcessLauncher.shared.spawn(spec)
        } catch {
            throw .spawnFailed("\(error)")
        }
        let status: ExitStatus
        do {
            status = try await child.waitForExit(until: .now + timeout)
        } catch {
            await child.kill()
            throw .hostFailure("\(executable) \(arguments.joined(separator: " ")) did not finish within \(timeout.text); killed")
        }
        let output = Output(status: status, stdout: stdoutPath == nil ? readFile(outPath) ?? [] : [],
                            stderr: String(decoding: readFile(errPath) ?? [], as: UTF8.self))
        guard case .exited(let code) = status, acceptedExitCodes.contains(code) else {
            throw .hostFailure("\(executable) \(arguments.joined(separator: " ")) \(status): \(output.stderr.suffix(600))")
        }
        return output
    }

    /// The absolute path of `name`, searched on PATH when it has no slash.
    public static func resolve(_ name: String) -> String? {
        if name.contains("/") { return access(name, X_OK) == 0 ? name : nil }
        let path = ProcessEnvironment.current["PATH"] ?? "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin"
        for folder in path.split(separator: ":") {
            let candidate = "\(folder)/\(name)"
            if access(candidate, X_OK) == 0 { return candidate }
        }
        return nil
    }
}

/// This process's environment as a dictionary.
enum ProcessEnvironment {
    static var current: [String: String] {
        var result: [String: String] = [:]
        var pointer = environ
        while let entry = pointer.pointee {
            let text = String(cString: entry)
            if let equals = text.firstIndex(of: "=") {
                result[String(text[..<equals])] = String(text[text.index(after: equals)...])
            }
            pointer += 1
        }
        return result
    }
}

/// The whole content of a file, or nil.
func readFile(_ path: String) -> [UInt8]? {
    let fd = open(path, O_RDONLY | O_CLOEXEC)
    guard fd >= 0 else { return nil }
    defer { close(fd) }
    var bytes: [UInt8] = []
    var chunk = [UInt8](repeating: 0, count: 1 << 16)
    while true {
        let count = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
        if count > 0 {
            bytes.append(contentsOf: chunk[0..<count])
        } else if count < 0 && errno == EINTR {
            continue
        } else {
            return count == 0 ? bytes : nil
        }
    }
}
