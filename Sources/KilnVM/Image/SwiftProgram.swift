import Glibc
import Logging

/// A manifest program given as `swift:<product>`: an executable product of the SwiftPM package
/// that holds the manifest (the nearest `Package.swift` at or above its folder). The image builder
/// compiles it for the guest — release, the Swift stdlib and everything else linked statically, so
/// it needs nothing from the minimal initramfs — into `<package>/.build-guest/methods`, and packs
/// the binary like any other program.
///
/// A method written with the `KilnMethod` SDK is such a product:
/// ```json
/// "programs": { "wordcount": "swift:my-wordcount" }
/// ```
struct SwiftProgram: Equatable {
    /// What marks a program as a SwiftPM product.
    static let prefix = "swift:"

    /// The product name.
    let product: String

    /// The product named by a manifest's program value, or nil for a plain host path.
    init?(programValue: String) {
        guard programValue.hasPrefix(Self.prefix) else { return nil }
        product = String(programValue.dropFirst(Self.prefix.count))
    }

    /// The SwiftPM arguments that build the product for a guest.
    func buildArguments(scratchPath: String) -> [String] {
        ["build", "-c", "release", "--static-swift-stdlib", "-Xswiftc", "-static-executable",
         "--product", product, "--scratch-path", scratchPath]
    }

    /// The nearest folder at or above `folder` with a `Package.swift`.
    static func packageRoot(above folder: String) -> String? {
        var current = realpath(folder, nil).map { pointer -> String in
            defer { free(pointer) }
            return String(cString: pointer)
        } ?? folder
        while true {
            if access(current + "/Package.swift", R_OK) == 0 { return current }
            guard current != "/", let slash = current.lastIndex(of: "/") else { return nil }
            current = slash == current.startIndex ? "/" : String(current[..<slash])
        }
    }

    /// Compiles the product in the package above `manifestFolder` and returns the binary's path.
    func build(manifestFolder: String, scratch: String, logger: Logger) async throws(VMError) -> String {
        let step = "compiling swift:\(product)"
        guard !product.isEmpty, product.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || "-_".contains($0)) }) else {
            throw .imageBuildFailed(step: step, reason: "'\(product)' is not a SwiftPM product name")
        }
        guard let root = Self.packageRoot(above: manifestFolder) else {
            throw .imageBuildFailed(step: step, reason: "no Package.swift at or above \(manifestFolder); a swift: program is a product of the package that holds the manifest")
        }
        let scratchPath = root + "/.build-guest/methods"
        logger.info("image: \(step) in \(root) (swift \(buildArguments(scratchPath: scratchPath).joined(separator: " ")))")
        do {
            try await HostCommand("swift", buildArguments(scratchPath: scratchPath), in: root, timeout: .seconds(1_800))
                .run(scratch: scratch)
        } catch {
            throw .imageBuildFailed(step: step, reason: "\(error)")
        }
        let binary = scratchPath + "/release/" + product
        guard access(binary, X_OK) == 0 else {
            throw .imageBuildFailed(step: step, reason: "swift build finished but \(binary) is missing; is \(product) an executable product?")
        }
        return binary
    }
}
