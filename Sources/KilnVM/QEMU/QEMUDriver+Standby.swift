import Foundation
import Glibc
import Logging

/// Standby QEMUs: started ahead, waiting for their incoming state, one queue per template.
extension QEMUDriver {
    /// A standby QEMU for `key` that is still alive, if any.
    func takeStandby(_ key: String) async -> QEMULauncher.Started? {
        while var queue = standbys[key], !queue.isEmpty {
            let candidate = queue.removeFirst()
            standbys[key] = queue
            if candidate.process.isRunning { return candidate }
            await launcher.abandon(candidate)
        }
        return nil
    }

    /// Starts standby QEMUs for `template` in the background, up to the configured number.
    func refillStandby(template: SnapshotTemplate, profile: VMProfile, accelerator: Accelerator) {
        let key = template.key
        guard configuration.standbyPerTemplate > 0, !closed, !refilling.contains(key) else { return }
        guard (standbys[key]?.count ?? 0) < configuration.standbyPerTemplate else { return }
        refilling.insert(key)
        Task {
            defer { self.refilling.remove(key) }
            while !self.closed, (self.standbys[key]?.count ?? 0) < self.configuration.standbyPerTemplate {
                let id = self.nextID()
                do {
                    let directory = try self.run.makeVMDirectory(id: id)
                    ExitCleanup.shared.removeAtExit(path: directory)
                    let started = try await self.launcher.start(
                        id: id, profile: profile, accelerator: accelerator, start: .restore(template),
                        directory: directory, deadline: .now + self.configuration.timeouts.restore,
                        timeout: self.configuration.timeouts.restore)
                    if self.closed {
                        await self.launcher.abandon(started)
                        return
                    }
                    self.standbys[key, default: []].append(started)
                } catch {
                    self.logger.warning("could not start a standby QEMU", metadata: ["error": "\(error)"])
                    return
                }
            }
        }
    }

}
