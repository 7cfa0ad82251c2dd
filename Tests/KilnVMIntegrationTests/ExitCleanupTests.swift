import Foundation
import KilnVM
import Testing

/// Nothing outlives the process that started it: a worker that exits takes its VMs along (the
/// exit hook kills them and removes their folders); one killed outright still takes its VMs
/// along (PDEATHSIG), and the next start sweeps the folders it left. Runs `kiln-bench
/// exit-probe`, built beside the tests.
@Suite("Exit cleanup", .serialized)
struct ExitCleanupTests {
    private static var probe: String {
        let debug = Fixture.repositoryRoot + "/.build/debug/kiln-bench"
        return FileManager.default.fileExists(atPath: debug) ? debug : Fixture.repositoryRoot + "/.build/release/kiln-bench"
    }

    /// Starts the probe; returns it with the VMs it reported (pid, folder) once it said "ready".
    private func startProbe(_ backend: Backend, wait: Bool) throws -> (Process, [(pid: Int32, directory: String)]) {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: Self.probe)
        process.arguments = ["exit-probe", "--backend", backend.rawValue, "--image", try Fixture.image().directory,
                             "--count", "2"] + (wait ? ["--wait"] : [])
        let output = Pipe()
        process.standardOutput = output
        try process.run()
        var text = ""
        let handle = output.fileHandleForReading
        let giveUp = Date().addingTimeInterval(60)
        while !text.contains("ready\n") && Date() < giveUp {
            let chunk = handle.availableData
            if chunk.isEmpty { break }
            text += String(decoding: chunk, as: UTF8.self)
        }
        let vms = text.split(separator: "\n").filter { $0.hasPrefix("vm ") }.map { line in
            let fields = line.split(separator: " ")
            return (pid: Int32(fields[2])!, directory: String(fields[3]))
        }
        return (process, vms)
    }

    /// The VM cgroups a worker process made (named `<pid>-<vm>`), in every hierarchy.
    static func cgroups(of owner: Int32) -> [String] {
        ["/sys/fs/cgroup/cpu/kiln", "/sys/fs/cgroup/memory/kiln", "/sys/fs/cgroup/pids/kiln", "/sys/fs/cgroup/kiln"]
            .flatMap { group in ((try? FileManager.default.contentsOfDirectory(atPath: group)) ?? []).filter { $0.hasPrefix("\(owner)-") } }
    }

    private func waitUntilGone(_ pids: [Int32]) async {
        for _ in 0..<200 where pids.contains(where: processExists) {
            try? await Task.sleep(for: .milliseconds(25))
        }
    }

    @Test(arguments: Backend.allCases)
    func anExitingWorkerTakesItsVMsAlong(backend: Backend) async throws {
        let (process, vms) = try startProbe(backend, wait: false)
        process.waitUntilExit()
        #expect(process.terminationStatus == 0)
        #expect(vms.count == 2)
        await waitUntilGone(vms.map(\.pid))
        for vm in vms {
            #expect(!processExists(vm.pid), "VM process \(vm.pid) outlived its worker")
            #expect(!FileManager.default.fileExists(atPath: vm.directory), "\(vm.directory) was left behind")
        }
        let runFolder = (vms.first.map { ($0.directory as NSString).deletingLastPathComponent }) ?? "/nonexistent"
        #expect(!FileManager.default.fileExists(atPath: runFolder))
        #expect(Self.cgroups(of: process.processIdentifier).isEmpty, "cgroups left by the exited worker")
    }

    @Test(arguments: Backend.allCases)
    func aKilledWorkerTakesItsVMsAlong(backend: Backend) async throws {
        let (process, vms) = try startProbe(backend, wait: true)
        #expect(vms.count == 2)
        kill(process.processIdentifier, SIGKILL)
        process.waitUntilExit()
        await waitUntilGone(vms.map(\.pid))
        for vm in vms { #expect(!processExists(vm.pid), "VM process \(vm.pid) outlived its killed worker") }
        // The files and cgroups stay until the next worker starts: it sweeps them.
        _ = try RunDirectory()
        if let layout = CgroupLayout.current() { CgroupCage.sweep(layout: layout) }
        for vm in vms { #expect(!FileManager.default.fileExists(atPath: vm.directory), "\(vm.directory) was not swept") }
        #expect(Self.cgroups(of: process.processIdentifier).isEmpty, "cgroups were not swept")
    }
}
