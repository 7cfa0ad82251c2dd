import Foundation
import KilnVM
import KilnWire
import Testing

/// What only the `qemu` backend does: accelerator choice, templates, fresh boots, clones that
/// do not share randomness, and a guest that stops answering.
@Suite("QEMU driver", .serialized)
struct QEMUDriverTests {
    @Test func reportsItsAcceleratorAndWhy() async throws {
        let driver = try Fixture.qemu()
        let accelerator = await driver.accelerator()
        let reason = try #require(await driver.acceleratorReason)
        #expect(!reason.isEmpty)
        if accelerator == .tcg {
            // On this project's hosts /dev/kvm is PVM: the test boot must have failed, not been skipped silently.
            #expect(reason.contains("KVM") || reason.contains("kvm") || reason.contains("configured"), "\(reason)")
        }
        #expect(await driver.backend == .qemu(accelerator))
        #expect(VMBackend.process.isolation.contains("no hardware isolation"))
    }

    @Test func restoresFromOneTemplatePerProfile() async throws {
        let driver = try Fixture.qemu()
        let first = try await driver.template(for: .small)
        let again = try await driver.template(for: .small)
        #expect(first == again)
        #expect(FileManager.default.fileExists(atPath: first.memoryFile))
        let state = try FileManager.default.attributesOfItem(atPath: first.stateFile)[.size] as? Int ?? 0
        #expect(state > 0 && state < 4 << 20, "the device state should be small: \(state) bytes")
        let vm = try await driver.restore(.small)
        #expect(vm.provisioning.method == .restore)
        await vm.destroy()
    }

    @Test func bootsFreshWhenAsked() async throws {
        let driver = try Fixture.qemu()
        let image = try Fixture.image()
        let vm = try await driver.boot(.small)
        #expect(vm.provisioning.method == .boot)
        let result = try await vm.exec(try Fixture.request("echo", ["fresh": true], image: image))
        #expect(try Fixture.output(of: result) == ["fresh": true])
        await vm.destroy()
    }

    @Test func clonesDoNotShareRandomness() async throws {
        let driver = try Fixture.qemu()
        var draws: [String] = []
        for _ in 0..<2 {
            let vm = try await driver.restore(.small)
            let result = try await vm.exec(Fixture.shell("head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \\n'"))
            draws.append(String(decoding: result.output, as: UTF8.self))
            await vm.destroy()
        }
        #expect(draws[0].count == 32)
        #expect(draws[0] != draws[1], "two clones of one template drew the same random bytes")
    }

    @Test func aGuestThatStopsAnsweringIsKilledAtTheDeadline() async throws {
        var configuration = QEMUDriver.Configuration()
        configuration.accelerator = await (try Fixture.qemu()).accelerator() == .kvm ? .kvm : .tcg
        configuration.timeouts.execGrace = .milliseconds(500)
        let driver = try QEMUDriver(image: try Fixture.image(), configuration: configuration, logger: Fixture.logger)
        let vm = try await driver.restore(.small)
        kill(vm.process.pid, SIGSTOP)  // a hung guest: QEMU alive, nothing answers
        do {
            _ = try await vm.exec(Fixture.shell("true", deadlineMs: 200))
            Issue.record("a stopped VM answered")
        } catch let error as VMError {
            guard case .timedOut = error else {
                Issue.record("expected timedOut, got \(error)")
                return
            }
        }
        // Killed by PID at the deadline, not left to burn a core: gone before the timeout was
        // thrown.
        #expect(!vm.process.isRunning)
        await vm.destroy()
        await driver.shutdown()
        #expect(await driver.liveCount == 0)
    }

    @Test func shutdownDestroysWhatIsLeft() async throws {
        var configuration = QEMUDriver.Configuration()
        configuration.accelerator = await (try Fixture.qemu()).accelerator() == .kvm ? .kvm : .tcg
        let driver = try QEMUDriver(image: try Fixture.image(), configuration: configuration, logger: Fixture.logger)
        let vms = [try await driver.restore(.small), try await driver.restore(.small)]
        #expect(await driver.liveCount == 2)
        await driver.shutdown()
        #expect(await driver.liveCount == 0)
        for vm in vms {
            #expect(!processExists(vm.process.pid))
            #expect(!FileManager.default.fileExists(atPath: vm.directory))
        }
    }
}
