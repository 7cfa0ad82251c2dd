import Foundation
import Logging
import Testing

@testable import KilnVM

@Suite("swift: programs")
struct SwiftProgramTests {
    private let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().path

    @Test func recognisesTheMarker() {
        #expect(SwiftProgram(programValue: "swift:kiln-examples")?.product == "kiln-examples")
        #expect(SwiftProgram(programValue: "../.build-guest/methods/release/kiln-examples") == nil)
        #expect(SwiftProgram(programValue: "/usr/bin/swift") == nil)
    }

    @Test func buildsStaticInItsOwnFolder() {
        let arguments = SwiftProgram(programValue: "swift:wordcount")!.buildArguments(scratchPath: "/p/.build-guest/methods")
        #expect(arguments == ["build", "-c", "release", "--static-swift-stdlib", "-Xswiftc", "-static-executable",
                              "--product", "wordcount", "--scratch-path", "/p/.build-guest/methods"])
    }

    @Test func findsThePackageAboveTheManifest() {
        #expect(SwiftProgram.packageRoot(above: root + "/examples") == root)
        #expect(SwiftProgram.packageRoot(above: root) == root)
        #expect(SwiftProgram.packageRoot(above: "/proc/self") == nil)
    }

    @Test func refusesABadProductName() async {
        await #expect(throws: VMError.self) {
            _ = try await SwiftProgram(programValue: "swift:../x")!.build(
                manifestFolder: root + "/examples", scratch: "/tmp", logger: .init(label: "test"))
        }
    }
}
