import Glibc

/// Removes images, snapshot templates and root file systems from the cache that nothing points
/// at any more. A folder any running process maps or names on its command line (a VM restored
/// from a template, QEMU booting an image) is kept, and so is a root file system an image holds
/// (its block image is a hard link into the cache).
public struct ImageCachePruner: Sendable {
    public let cache: String

    public init(cache: String) {
        self.cache = cache
    }

    /// Removes every image except those `keep` names (ids, or links such as `current` in the
    /// cache), and every template not made from a kept image. Returns what was removed.
    @discardableResult
    public func prune(keep: [String]) -> [String] {
        let kept = Set(keep.map { name -> String in
            let link = cache + "/" + name
            var buffer = [CChar](repeating: 0, count: 4096)
            let count = readlink(link, &buffer, buffer.count - 1)
            return count > 0 ? String(decoding: buffer.prefix(count).map { UInt8(bitPattern: $0) }, as: UTF8.self) : name
        })
        let inUse = Self.pathsInUse()
        var removed: [String] = []
        for name in listDirectory(cache) where name.count == 64 && name.allSatisfy(\.isHexDigit) && !kept.contains(name) {
            let path = cache + "/" + name
            guard !inUse.contains(where: { $0.hasPrefix(path) }) else { continue }
            removeTree(path)
            removed.append(path)
        }
        let templates = cache + "/templates"
        for name in listDirectory(templates) where !kept.contains(where: { name.hasPrefix($0.prefix(16)) }) {
            let path = templates + "/" + name
            guard !inUse.contains(where: { $0.hasPrefix(path) }) else { continue }
            removeTree(path)
            removed.append(path)
        }
        let rootfs = cache + "/rootfs"
        for name in listDirectory(rootfs) where name.hasSuffix(".erofs") {
            var info = stat()
            guard lstat(rootfs + "/" + name, &info) == 0, info.st_nlink == 1 else { continue }
            let key = rootfs + "/" + name.dropLast(".erofs".count)
            for suffix in [".erofs", ".index", ".json"] { unlink(key + suffix) }
            removed.append(key + ".erofs")
        }
        return removed
    }

    /// Files mapped by, and arguments of, every process this user can see.
    static func pathsInUse() -> [String] {
        var paths: [String] = []
        for entry in listDirectory("/proc") where entry.allSatisfy(\.isNumber) {
            if let maps = readFile("/proc/\(entry)/maps") {
                for line in String(decoding: maps, as: UTF8.self).split(separator: "\n") {
                    if let slash = line.firstIndex(of: "/") { paths.append(String(line[slash...])) }
                }
            }
            if let arguments = readFile("/proc/\(entry)/cmdline") {
                for argument in arguments.split(separator: 0) {
                    let text = String(decoding: argument, as: UTF8.self)
                    for part in text.split(whereSeparator: { $0 == "," || $0 == "=" }) where part.hasPrefix("/") {
                        paths.append(String(part))
                    }
                }
            }
        }
        return paths
    }
}
