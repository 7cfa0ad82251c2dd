import Foundation
import KilnVM
import KilnWire
import Testing

/// The `qemu` backend with real QEMU microvm guests, restored from a snapshot template.
@Suite("QEMU microvm", .serialized)
struct QEMUMicroVMTests {
    @Test func restoredVMRunsEcho() async throws {
        let driver = try Fixture.qemu()
        let image = try Fixture.image()
        let vm = try await driver.restore(.small)
        defer { Task { await vm.destroy() } }
        #expect(vm.provisioning.method == .restore)
        let args: MessagePackValue = ["text": "hello from the guest", "n": 42, "blob": .binary([0, 1, 2, 255])]
        let result = try await vm.exec(try Fixture.request("echo", args, image: image))
        #expect(result.status == .ok, "stderr: \(result.stderr)")
        #expect(result.exitCode == 0)
        #expect(try Fixture.output(of: result) == args)
        #expect(result.maxrssKB > 0)
        await vm.destroy()
    }
}
