import Foundation
import KilnTools
import KilnVM
import KilnWire
import Testing

/// The example manifest's Python methods on both backends: `py-echo` and `py-thumbnail` run in
/// serve mode through `kiln_method.py` on a Debian root file system with python3 and Pillow,
/// started warm, so that a VM restored from the template (or a new sandbox) answers its first
/// call from a runtime that was already running.
@Suite("Python methods", .serialized)
struct PythonMethodTests {
    @Test(arguments: Backend.allCases)
    func aWarmRuntimeAnswersTheFirstCallAndAClearedGuestStartsOneAgain(backend: Backend) async throws {
        let image = try Fixture.image()
        try await withVM(backend, profile: .medium) { vm in
            let args: MessagePackValue = ["text": "hello from python", "n": 3, "raw": .binary([0, 1, 2])]
            let first = try await vm.exec(try Fixture.request("py-echo", args, image: image))
            #expect(first.status == .ok, "\(first.stderr)")
            #expect(try Fixture.output(of: first) == args)
            #expect(!first.runtimeStarted, "the runtime was started warm, before the first call: \(first.stderr)")
            // A full reset ends every runtime: the next call starts Python again.
            try await vm.reset()
            let second = try await vm.exec(try Fixture.request("py-echo", ["again": true], image: image))
            #expect(second.status == .ok, "\(second.stderr)")
            #expect(second.runtimeStarted, "\(second.stderr)")
            #expect(try Fixture.output(of: second) == ["again": true])
        }
    }

    @Test(arguments: Backend.allCases)
    func aThumbnailComesBackAsAPNG(backend: Backend) async throws {
        let image = try Fixture.image()
        let picture = PNGImage.make(width: 300, height: 200) { x, y in (UInt8(x % 256), UInt8(y % 256), 128) }
        try await withVM(backend, profile: .medium) { vm in
            let result = try await vm.exec(try Fixture.request("py-thumbnail", ["image": .binary(picture), "size": 60], image: image))
            #expect(result.status == .ok, "\(result.stderr)")
            let output = try Fixture.output(of: result)
            #expect(output?["width"] == 60 && output?["height"] == 40, "\(String(describing: output))")
            guard case .binary(let thumbnail)? = output?["image"] else {
                Issue.record("no image in \(String(describing: output))")
                return
            }
            #expect(thumbnail.starts(with: [0x89, 0x50, 0x4e, 0x47]), "a PNG")

            // Not an image: the method's error, and its runtime serves on.
            let bad = try await vm.exec(try Fixture.request("py-thumbnail", ["image": .binary([1, 2, 3])], image: image))
            #expect(bad.status == .error && !bad.crashed)
            #expect(bad.methodError?.contains("UnidentifiedImageError") == true, "\(String(describing: bad.methodError))")
            let again = try await vm.exec(try Fixture.request("py-thumbnail", ["image": .binary(picture), "size": 30], image: image))
            #expect(try Fixture.output(of: again)?["width"] == 30)
            #expect(!again.runtimeStarted)
        }
    }

    @Test(arguments: Backend.allCases)
    func aCrashOfThePythonRuntimeIsACrash(backend: Backend) async throws {
        let image = try Fixture.image()
        try await withVM(backend, profile: .medium) { vm in
            let crashed = try await vm.exec(try Fixture.request("py-echo", ["crash": true], image: image))
            #expect(crashed.status == .error)
            #expect(crashed.crashed, "a runtime that died mid-call taints its VM: \(crashed.stderr)")
            #expect(crashed.exitCode == 128 + SIGABRT, "\(crashed.exitCode)")
        }
    }
}
