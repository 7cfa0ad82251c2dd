import Foundation
import Glibc
import Logging

/// Choosing the accelerator by a real test boot.
extension QEMUDriver {
    /// Boots the image once under KVM: only a guest that greets proves KVM works here (a
    /// /dev/kvm that opens may still abort QEMU or crawl, as on PVM hosts).
    func probeKVM() async -> (Accelerator, String) {
        guard HostFacts.kvmDeviceOpens else { return (.tcg, "/dev/kvm is missing or not accessible") }
        let id = nextID() + "-probe"
        let started = ContinuousClock.now
        do {
            let directory = try run.makeVMDirectory(id: id)
            let (launched, _) = try await launcher.launch(
                id: id, profile: .small, accelerator: .kvm, start: .boot(image: image, sharedMemoryFile: nil),
                directory: directory, timeout: configuration.timeouts.probe)
            await launched.session.close()
            await launched.monitor.close()
            await launched.process.kill()
            launched.cage?.remove()
            removeTree(directory)
            return (.kvm, "a KVM test boot greeted in \(started.duration(to: .now).milliseconds) ms")
        } catch {
            return (.tcg, "the KVM test boot failed: \(String(describing: error).prefix(300))")
        }
    }
}
