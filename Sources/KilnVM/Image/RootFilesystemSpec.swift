import Foundation

/// A root file system a manifest names for its methods, and where it comes from: a Debian
/// package list (built with `mmdebstrap`), an OCI image archive (what `docker save`, `podman
/// save` or `skopeo copy … oci-archive:` write), or a folder on the host; plus host files copied
/// in (a method's code). The image builder packs it read-only as a block image; in the guest the
/// method runs with it as its root, over a scratch layer that the reset wipes.
///
/// ```json
/// "root_filesystems": {
///   "python": { "debian": { "suite": "bookworm", "packages": ["python3-minimal", "python3-pil"] },
///               "copy": { "/app": "python" } },
///   "shop":   { "oci": "images/shop.oci.tar" },
///   "tools":  { "directory": "rootfs/tools" }
/// }
/// ```
public struct RootFilesystemSpec: Codable, Sendable, Equatable {
    /// Where the files come from.
    public enum Source: Sendable, Equatable {
        case debian(DebianPackages)
        /// An image archive, relative to the manifest's folder.
        case oci(archive: String)
        /// A folder, relative to the manifest's folder.
        case directory(String)
    }

    /// Debian packages and their dependencies, from the package registry apt uses.
    public struct DebianPackages: Codable, Sendable, Equatable {
        /// A Debian suite: `bookworm`, `stable`, …
        public var suite: String
        /// Packages beyond the essential set (which brings a shell and coreutils).
        public var packages: [String]

        public init(suite: String = "bookworm", packages: [String]) {
            self.suite = suite
            self.packages = packages
        }

        enum CodingKeys: String, CodingKey, CaseIterable {
            case suite, packages
        }

        public init(from decoder: any Decoder) throws {
            let container = try decoder.container(keyedBy: CodingKeys.self)
            suite = try container.decodeIfPresent(String.self, forKey: .suite) ?? "bookworm"
            packages = try container.decodeIfPresent([String].self, forKey: .packages) ?? []
        }
    }

    public var source: Source
    /// Guest path → host file or folder (relative to the manifest's folder), copied in after
    /// the source: a method's code beside the runtime a package list brings.
    public var copy: [String: String]

    public init(source: Source, copy: [String: String] = [:]) {
        self.source = source
        self.copy = copy
    }

    enum CodingKeys: String, CodingKey, CaseIterable {
        case debian, oci, directory, copy
    }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        var sources: [Source] = []
        if let debian = try container.decodeIfPresent(DebianPackages.self, forKey: .debian) { sources.append(.debian(debian)) }
        if let oci = try container.decodeIfPresent(String.self, forKey: .oci) { sources.append(.oci(archive: oci)) }
        if let directory = try container.decodeIfPresent(String.self, forKey: .directory) { sources.append(.directory(directory)) }
        guard sources.count == 1, let source = sources.first else {
            throw DecodingError.dataCorrupted(.init(
                codingPath: decoder.codingPath,
                debugDescription: "a root file system names exactly one of debian, oci or directory, not \(sources.count)"))
        }
        self.source = source
        copy = try container.decodeIfPresent([String: String].self, forKey: .copy) ?? [:]
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        switch source {
        case .debian(let packages): try container.encode(packages, forKey: .debian)
        case .oci(let archive): try container.encode(archive, forKey: .oci)
        case .directory(let folder): try container.encode(folder, forKey: .directory)
        }
        if !copy.isEmpty { try container.encode(copy, forKey: .copy) }
    }

    /// Checks names and paths; `name` names it in errors.
    func validate(name: String, path: String) throws(VMError) {
        let at = "root_filesystems.\(name)"
        guard MethodManifest.isPlainName(name), name.utf8.count <= 64 else {
            throw .manifestInvalid(path: path, reason: "root file system name '\(name.prefix(80))' must be 1–64 letters, digits, '-', '_' or '.'")
        }
        switch source {
        case .debian(let debian):
            guard MethodManifest.isPlainName(debian.suite) else {
                throw .manifestInvalid(path: path, reason: "\(at).debian.suite '\(debian.suite.prefix(80))' is not a suite name")
            }
            guard !debian.packages.isEmpty else {
                throw .manifestInvalid(path: path, reason: "\(at).debian.packages is empty: name the packages the methods need (python3-minimal, …)")
            }
            for package in debian.packages where !Self.isPackageName(package) {
                throw .manifestInvalid(path: path, reason: "\(at).debian.packages: '\(package.prefix(80))' is not a Debian package name")
            }
        case .oci(let archive):
            guard !archive.isEmpty else { throw .manifestInvalid(path: path, reason: "\(at).oci names no archive") }
        case .directory(let folder):
            guard !folder.isEmpty else { throw .manifestInvalid(path: path, reason: "\(at).directory names no folder") }
        }
        for (guest, host) in copy {
            guard Self.isGuestPath(guest), guest != "/" else {
                throw .manifestInvalid(path: path, reason: "\(at).copy: '\(guest.prefix(80))' must be an absolute path inside the root, without '..'")
            }
            guard !host.isEmpty else { throw .manifestInvalid(path: path, reason: "\(at).copy.\(guest) names no host file") }
        }
    }

    /// A Debian package name (policy §5.6.1: lower-case letters, digits, `+`, `-`, `.`), with
    /// an optional `:arch`.
    static func isPackageName(_ name: String) -> Bool {
        let parts = name.split(separator: ":", omittingEmptySubsequences: false)
        guard (1...2).contains(parts.count), let package = parts.first, package.count >= 2, package.utf8.count <= 128 else { return false }
        let allowed: (Character) -> Bool = { $0.isASCII && ($0.isLowercase || $0.isNumber || "+-.".contains($0)) }
        return package.first.map { $0.isLowercase || $0.isNumber } == true && package.allSatisfy(allowed)
            && parts.dropFirst().allSatisfy { !$0.isEmpty && $0.allSatisfy(allowed) }
    }

    /// An absolute path of plain components (no `.`, `..` or empty ones past the first slash).
    static func isGuestPath(_ path: String) -> Bool {
        guard path.hasPrefix("/"), path.utf8.count <= 1_024, !path.contains("\0") else { return false }
        return path.split(separator: "/").allSatisfy { $0 != "." && $0 != ".." }
    }
}
