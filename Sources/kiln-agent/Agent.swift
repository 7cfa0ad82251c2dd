import Glibc
import KilnWire

/// The agent's main loop: greet, then serve one frame at a time until the host goes away; on a
/// virtio port, wait for the next host (a restored clone's) and greet it again.
struct Agent {
    static let version = "0.1.0"

    private let options: AgentOptions
    private var port: GuestPort
    private var runner: MethodRunner
    private var housekeeping: Housekeeping
    private var entropy = EntropyMixer()

    init(options: AgentOptions) {
        self.options = options
        self.port = GuestPort(source: options.channel)
        self.runner = MethodRunner(scratch: options.scratch)
        self.housekeeping = Housekeeping(scratch: options.scratch, ownsMachine: self.port.reconnects)
        // Methods find programs by name in these folders; their working directory is scratch.
        setenv("PATH", "/kiln/bin:/bin:/sbin:/usr/bin:/usr/sbin", 1)
        _ = mkdir(options.scratch, 0o1777)
        _ = chdir(options.scratch)
        // A host that disappears mid-write must not kill the agent.
        signal(SIGPIPE, SIG_IGN)
    }

    mutating func run() -> Never {
        // What the greeting reports about the machine does not change across a restore: read it
        // once, so that a restored clone only takes the time before it greets.
        var greeting = Housekeeping.hello(version: Self.version)
        if let vcpus = options.reportedVCPUs { greeting.vcpus = vcpus }
        if let memory = options.reportedMemoryMB { greeting.memoryMB = memory }
        var connections = 0
        while true {
            port.open()
            connections += 1
            greeting.uptimeUs = Housekeeping.uptimeMicroseconds()
            if port.send(.hello(greeting)) {
                // From the second connection on, this guest is (very likely) a restored clone: its
                // kernel RNG state is shared with every other clone of the same template. Reseed
                // after greeting, while the host has nothing to send yet.
                if connections > 1 { entropy.reseedAfterRestore() }
                serve()
            }
            port.close()
            guard port.reconnects else { exit(0) }
        }
    }

    /// Serves frames until the host goes away.
    private mutating func serve() {
        while true {
            let body: [UInt8]?
            do {
                body = try port.nextFrame()
            } catch {
                // A length prefix over the limit: the stream is out of step and cannot be resynced.
                _ = port.send(.error(.init(message: "malformed frame: \(error); closing the channel")))
                return
            }
            guard let body else { return }
            let reply: GuestFrame?
            do {
                reply = try handle(GuestFrame.decodeValue(body: body), body: body)
            } catch {
                reply = .error(.init(message: "malformed frame: \(error)"))
            }
            if let reply, !port.send(reply) { return }
        }
    }

    private mutating func handle(_ frame: GuestFrame, body: [UInt8]) -> GuestFrame? {
        switch frame {
        case .exec(let request):
            entropy.mix(body.prefix(256))
            let result = runner.run(request)
            housekeeping.reapOrphans()
            return .result(result)
        case .ping:
            return .pong(Housekeeping.pong())
        case .reset:
            runner.killSpawnedGroups()
            housekeeping.reset()
            return .resetOK
        case .shutdown:
            port.close()
            housekeeping.powerOff()
        case .hello, .result, .pong, .resetOK, .error:
            return .error(.init(message: "unexpected '\(frame.type)' frame from the host"))
        }
    }
}
