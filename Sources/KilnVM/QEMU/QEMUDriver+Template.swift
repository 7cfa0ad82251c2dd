import Foundation
import Glibc
import Logging

/// Saving a snapshot template: boot, let the agent detach, migrate the device state to a file.
extension QEMUDriver {
    /// Boots the template's source VM with its RAM in `staging/ram.img` (shared), lets the agent
    /// greet, disconnects so that the agent waits for the next host, and saves the device state.
    func saveTemplate(profile: VMProfile, accelerator: Accelerator, into staging: String) async throws {
        let id = nextID() + "-template"
        let started = ContinuousClock.now
        logger.info("building a snapshot template", metadata: ["profile": "\(profile)", "dir": "\(staging)"])
        let directory = try run.makeVMDirectory(id: id)
        let (launched, _) = try await launcher.launch(
            id: id, profile: profile, accelerator: accelerator,
            start: .boot(image: image, sharedMemoryFile: staging + "/ram.img"),
            directory: directory, timeout: configuration.timeouts.boot)
        defer { launched.cage?.remove() }
        let deadline = ContinuousClock.now + configuration.timeouts.save
        do {
            let consoleLog = directory + "/console.log"
            let before = fileSize(consoleLog) ?? 0
            await launched.session.close()
            // The agent saw EOF and now waits for a host: a clone resumes right there.
            try await waitForConsole(consoleLog, after: before, marker: "kiln-agent: waiting for a host", until: deadline, vm: id)
            try await launched.monitor.execute(
                "migrate-set-capabilities",
                arguments: #"{"capabilities":[{"capability":"x-ignore-shared","state":true}]}"#, until: deadline)
            try await launched.monitor.execute("stop", until: deadline)
            let state = staging + "/vm.state"
            guard !state.contains("'") else { throw VMError.hostFailure("template path holds a quote: \(state)") }
            try await launched.monitor.execute("migrate", arguments: #"{"uri":"exec:cat > '\#(state)'"}"#, until: deadline)
            while true {
                let reply = try await launched.monitor.execute("query-migrate", until: deadline)
                let status = reply.string("status") ?? "?"
                if status == "completed" { break }
                if status == "failed" || status == "cancelled" {
                    throw VMError.monitorError(vm: id, command: "migrate", detail: "status \(status)")
                }
                try await Task.sleep(for: .milliseconds(2))
            }
        } catch {
            await launched.monitor.close()
            await launched.process.kill()
            removeTree(directory)
            throw error
        }
        await launched.monitor.close()
        await launched.process.kill()
        removeTree(directory)
        logger.info("snapshot template saved", metadata: [
            "profile": "\(profile)", "ms": "\(started.duration(to: .now).milliseconds)",
            "state_bytes": "\(fileSize(staging + "/vm.state") ?? 0)"])
    }

    private func waitForConsole(_ path: String, after offset: Int, marker: String, until deadline: ContinuousClock.Instant, vm: String) async throws(VMError) {
        while ContinuousClock.now < deadline {
            if let bytes = readFile(path), bytes.count > offset,
               String(decoding: bytes[offset...], as: UTF8.self).contains(marker) {
                return
            }
            try? await Task.sleep(for: .milliseconds(5))
        }
        throw .timedOut(vm: vm, step: "waiting for the agent to detach before the snapshot", after: configuration.timeouts.save, detail: "")
    }

}
