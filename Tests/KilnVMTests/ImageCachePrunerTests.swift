import Foundation
import Testing

@testable import KilnVM

@Suite("Image cache pruning")
struct ImageCachePrunerTests {
    @Test func keepsTheLinkedImageAndItsTemplates() throws {
        let cache = NSTemporaryDirectory() + "kiln-prune-\(getpid())"
        defer { try? FileManager.default.removeItem(atPath: cache) }
        let manager = FileManager.default
        let old = String(repeating: "a", count: 64)
        let current = String(repeating: "b", count: 64)
        for folder in [old, current, "kernels/linux-image-x", "templates/\(old.prefix(16))-1c128m-tcg-x",
                       "templates/\(current.prefix(16))-1c128m-tcg-x"] {
            try manager.createDirectory(atPath: cache + "/" + folder, withIntermediateDirectories: true)
        }
        try manager.createSymbolicLink(atPath: cache + "/current", withDestinationPath: current)

        let removed = ImageCachePruner(cache: cache).prune(keep: ["current"])

        #expect(Set(removed) == [cache + "/" + old, cache + "/templates/\(old.prefix(16))-1c128m-tcg-x"])
        #expect(manager.fileExists(atPath: cache + "/" + current))
        #expect(manager.fileExists(atPath: cache + "/templates/\(current.prefix(16))-1c128m-tcg-x"))
        #expect(manager.fileExists(atPath: cache + "/kernels/linux-image-x"))
    }
}
