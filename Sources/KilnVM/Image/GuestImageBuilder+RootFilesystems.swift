import Glibc
import KilnWire

extension GuestImageBuilder {
    /// The root file systems the manifest's methods run on, built or found in the cache, in
    /// device order (by name).
    func buildRootFilesystems(
        _ manifest: MethodManifest, manifestFolder: String, maxBytes: Int, scratch: String
    ) async throws(VMError) -> [RootFilesystemBuilder.Built] {
        let used = Set(manifest.methods.keys.compactMap { manifest.rootfs(of: $0) })
        for name in manifest.rootFilesystems.keys.sorted() where !used.contains(name) {
            logger.warning("image: root file system \(name) is not used by any method; not built")
        }
        let builder = RootFilesystemBuilder(cache: cache, maxBytes: maxBytes, logger: logger)
        var built: [RootFilesystemBuilder.Built] = []
        for name in used.sorted() {
            guard let spec = manifest.rootFilesystems[name] else { continue }  // validated before
            built.append(try await builder.build(name: name, spec: spec, manifestFolder: manifestFolder, scratch: scratch))
        }
        return built
    }

    /// The images' entries for `image.json` and the agent: `/dev/vda` for the first, and on.
    static func rootFilesystemImages(_ built: [RootFilesystemBuilder.Built]) -> [RootFilesystemImage] {
        built.enumerated().map { index, filesystem in
            let letter = Character(Unicode.Scalar(UInt8(ascii: "a") + UInt8(index)))
            return RootFilesystemImage(name: filesystem.name, file: "rootfs-images/\(filesystem.name).erofs", bytes: filesystem.bytes,
                                       device: "/dev/vd\(letter)", config: filesystem.config)
        }
    }

    /// Each method's entry as the guest runs it. On a root file system: an OCI image's
    /// Entrypoint and Cmd when the manifest gives none, and a program named without a slash
    /// found on the root's PATH (the image's own, else the usual folders) and made absolute. An
    /// entry that is no executable in its root is an error naming the method. Every method
    /// names its root file system (or none) itself.
    static func resolveEntries(
        _ manifest: MethodManifest, rootFilesystems built: [RootFilesystemBuilder.Built], path: String
    ) throws(VMError) -> [String: MethodManifest.Method] {
        let byName = Dictionary(uniqueKeysWithValues: built.map { ($0.name, $0) })
        var methods: [String: MethodManifest.Method] = [:]
        for (name, var method) in manifest.methods {
            method.rootfs = manifest.rootfs(of: name)
            defer { methods[name] = method }
            guard let rootfs = method.rootfs, let filesystem = byName[rootfs] else { continue }
            if method.entry.isEmpty {
                guard !filesystem.config.entry.isEmpty else {
                    throw .manifestInvalid(path: path, reason: "methods.\(name) has no entry and the image of root file system \(rootfs) sets no Entrypoint or Cmd")
                }
                method.entry = filesystem.config.entry
            }
            let program = method.entry[0]
            if manifest.programs[program] != nil || program.hasPrefix(MethodManifest.builtinPrefix)
                || program.hasPrefix(MethodManifest.guestProgramFolder + "/") || program.hasPrefix(GuestLayout.sdk + "/") {
                continue
            }
            let searchPath = filesystem.config.env.first { $0.hasPrefix("PATH=") }
                .map { $0.dropFirst(5).split(separator: ":").map(String.init) } ?? RootFilesystemIndex.searchPath
            guard let found = filesystem.index.locate(program, searchPath: searchPath) else {
                throw .manifestInvalid(path: path, reason: "methods.\(name).entry: \(program.prefix(200)) is not an executable file in root file system \(rootfs)"
                    + (program.hasPrefix("/") ? "" : " (searched \(searchPath.joined(separator: ":")))"))
            }
            method.entry[0] = found
        }
        return methods
    }

    /// The agent's table of root file systems, `{name: {device, env, cwd, user?}}`, keys sorted
    /// (the image's hash must not depend on a dictionary's order).
    static func agentTable(_ images: [RootFilesystemImage]) throws(VMError) -> [UInt8] {
        let entries: [(key: MessagePackValue, value: MessagePackValue)] = images.map { image in
            var fields: [(key: MessagePackValue, value: MessagePackValue)] = [
                (key: "device", value: .string(image.device)),
                (key: "env", value: .array(image.config.env.map { .string($0) })),
                (key: "cwd", value: .string(image.config.workingDir)),
            ]
            if let user = image.config.user { fields.append((key: "user", value: .string(user))) }
            return (key: .string(image.name), value: .map(fields))
        }
        do {
            return try MessagePackEncoder().encode(MessagePackValue.map(entries).sortingKeys())
        } catch {
            throw .imageBuildFailed(step: "writing \(GuestLayout.rootFilesystemTable)", reason: "\(error)")
        }
    }
}
