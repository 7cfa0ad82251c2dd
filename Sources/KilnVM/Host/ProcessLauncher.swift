import CKilnHost
import Glibc
import Synchronization

/// How to start a child process.
public struct SpawnSpec: Sendable {
    /// The program, by absolute path.
    public var executable: String
    /// argv, including argv[0].
    public var arguments: [String]
    /// The whole environment of the child (nothing is inherited implicitly).
    public var environment: [String: String]
    /// `descriptors[i]` becomes fd i in the child; nil is /dev/null. The caller keeps ownership.
    public var descriptors: [Int32?]
    /// CLONE_NEW* flags: the child starts in these fresh namespaces.
    public var namespaces: Namespaces
    /// `cgroup.procs` files the child is placed into before it executes anything.
    public var cgroupProcsFiles: [String]

    public init(
        executable: String, arguments: [String]? = nil, environment: [String: String] = [:],
        descriptors: [Int32?] = [nil, nil, nil], namespaces: Namespaces = [], cgroupProcsFiles: [String] = []
    ) {
        self.executable = executable
        self.arguments = arguments ?? [executable]
        self.environment = environment
        self.descriptors = descriptors
        self.namespaces = namespaces
        self.cgroupProcsFiles = cgroupProcsFiles
    }

    /// Linux namespaces a child can be started in.
    public struct Namespaces: OptionSet, Sendable {
        public let rawValue: UInt
        public init(rawValue: UInt) { self.rawValue = rawValue }

        public static let pid = Namespaces(rawValue: UInt(CLONE_NEWPID))
        public static let mount = Namespaces(rawValue: UInt(CLONE_NEWNS))
        public static let network = Namespaces(rawValue: UInt(CLONE_NEWNET))
        public static let ipc = Namespaces(rawValue: UInt(CLONE_NEWIPC))
        public static let uts = Namespaces(rawValue: UInt(CLONE_NEWUTS))
        /// Everything the `process` backend isolates.
        public static let sandbox: Namespaces = [.pid, .mount, .network, .ipc, .uts]
    }
}

/// Why a child could not be started.
public struct SpawnError: Error, Sendable, CustomStringConvertible {
    public let executable: String
    /// The step that failed in the child or around it: clone, cgroup, exec, …
    public let step: String
    public let errno: Int32

    public var description: String {
        "cannot start \(executable): \(step) failed: \(String(cString: strerror(errno)))"
    }
}

/// Starts every child process of KilnVM, from one thread that lives as long as the process.
/// Children get SIGKILL when the thread that forked them ends (PR_SET_PDEATHSIG); forking from a
/// pool thread that may retire would kill them at random, and a worker that dies — even by
/// SIGKILL — must not leave a VM burning a core.
public final class ProcessLauncher: Sendable {
    /// The process-wide launcher.
    public static let shared = ProcessLauncher()

    private struct Job {
        let spec: SpawnSpec
        let continuation: CheckedContinuation<pid_t, any Error>
    }

    private let jobs = Mutex<[Job]>([])
    /// Counts queued jobs; the launcher thread sleeps on it.
    private let pending = Semaphore()

    private init() {
        var thread = pthread_t()
        let created = pthread_create(&thread, nil, { context in
            Unmanaged<ProcessLauncher>.fromOpaque(context!).takeUnretainedValue().serve()
        }, Unmanaged.passUnretained(self).toOpaque())
        precondition(created == 0, "ProcessLauncher: pthread_create failed: \(created)")
        pthread_detach(thread)
    }

    /// Starts `spec`'s program and returns the running child.
    public func spawn(_ spec: SpawnSpec) async throws -> ChildProcess {
        let pid = try await withCheckedThrowingContinuation { continuation in
            jobs.withLock { $0.append(Job(spec: spec, continuation: continuation)) }
            pending.signal()
        }
        return ChildProcess(pid: pid, executable: spec.executable)
    }

    private func serve() -> Never {
        while true {
            pending.wait()
            let job = jobs.withLock { $0.isEmpty ? nil : $0.removeFirst() }
            guard let job else { continue }
            switch Self.start(job.spec) {
            case .success(let pid): job.continuation.resume(returning: pid)
            case .failure(let error): job.continuation.resume(throwing: error)
            }
        }
    }

    private static func start(_ spec: SpawnSpec) -> Result<pid_t, SpawnError> {
        var cgroupFDs: [Int32] = []
        defer { cgroupFDs.forEach { close($0) } }
        for path in spec.cgroupProcsFiles {
            let fd = open(path, O_WRONLY | O_CLOEXEC)
            guard fd >= 0 else { return .failure(SpawnError(executable: path, step: "open cgroup.procs", errno: errno)) }
            cgroupFDs.append(fd)
        }
        let environment = spec.environment.map { "\($0.key)=\($0.value)" }.sorted()
        var argv: [UnsafeMutablePointer<CChar>?] = spec.arguments.map { strdup($0) } + [nil]
        var envp: [UnsafeMutablePointer<CChar>?] = environment.map { strdup($0) } + [nil]
        defer {
            argv.forEach { free($0) }
            envp.forEach { free($0) }
        }
        let fds = spec.descriptors.map { $0 ?? -1 }
        var error: Int32 = 0
        var step: UnsafePointer<CChar>? = nil
        let pid = spec.executable.withCString { path in
            fds.withUnsafeBufferPointer { fdBuffer in
                cgroupFDs.withUnsafeBufferPointer { cgroupBuffer in
                    argv.withUnsafeMutableBufferPointer { argvBuffer in
                        envp.withUnsafeMutableBufferPointer { envpBuffer in
                            var request = kiln_spawn_request(
                                path: path, argv: argvBuffer.baseAddress, envp: envpBuffer.baseAddress,
                                fds: fdBuffer.baseAddress, fd_count: Int32(fds.count),
                                namespace_flags: spec.namespaces.rawValue,
                                cgroup_procs_fds: cgroupBuffer.baseAddress,
                                cgroup_procs_count: Int32(cgroupFDs.count), die_with_parent: 1, change_user: 0, uid: 0, gid: 0,
                                max_processes: 0, set_oom_score_adj: 0, oom_score_adj: 0, root: nil, cwd: nil)
                            return kiln_spawn(&request, &error, &step)
                        }
                    }
                }
            }
        }
        guard pid > 0 else {
            return .failure(SpawnError(executable: spec.executable, step: step.map { String(cString: $0) } ?? "spawn",
                                       errno: error))
        }
        return .success(pid)
    }
}

/// A POSIX semaphore, for the one place a dedicated thread sleeps until work arrives.
final class Semaphore: @unchecked Sendable {
    // sem_t is safe to use from any thread; it never moves once allocated.
    private let semaphore: UnsafeMutablePointer<sem_t>

    init() {
        semaphore = .allocate(capacity: 1)
        sem_init(semaphore, 0, 0)
    }

    deinit {
        sem_destroy(semaphore)
        semaphore.deallocate()
    }

    func signal() { sem_post(semaphore) }

    func wait() { while sem_wait(semaphore) != 0 {} }
}
