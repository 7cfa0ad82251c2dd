import Glibc

/// The methods' working directory, emptied between calls.
///
/// Most calls leave it empty, and on a tmpfs (scratch is one in a VM and in the process sandbox)
/// telling so costs one `fstatat`: a tmpfs directory's size grows by a fixed amount per entry and
/// is back to its empty size only when the last entry goes, so, unlike a timestamp (which a
/// coarse clock can leave unchanged across a write), it cannot miss a file. Where a folder's
/// size does not count its entries, every wipe reads the folder.
struct ScratchFolder {
    let path: String
    /// The folder's size when empty, where sizes count entries (tmpfs); nil elsewhere.
    private let emptySize: Int?

    /// Makes the folder if it is missing, and learns its empty size if it is empty now (at the
    /// agent's start it is: the guest's init or the sandbox just mounted it).
    init(path: String) {
        self.path = path
        _ = mkdir(path, 0o1777)
        emptySize = Self.emptySizeIfCounting(path)
    }

    /// Empties the folder, making it again if a method removed it; false when something is
    /// left (a tree deeper than the agent has descriptors for, say): the next method must not
    /// meet it, so the caller treats that as a failed reset.
    func wipe() -> Bool {
        if isKnownEmpty() { return true }
        let fd = open(path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
        guard fd >= 0 else { return mkdir(path, 0o1777) == 0 }
        defer { close(fd) }
        Self.removeContents(of: fd)
        return isKnownEmpty() || Self.entryNames(of: fd).isEmpty
    }

    /// True when one `fstatat` proves the folder empty; false when it may hold something.
    private func isKnownEmpty() -> Bool {
        guard let emptySize else { return false }
        var info = stat()
        guard fstatat(AT_FDCWD, path, &info, AT_SYMLINK_NOFOLLOW) == 0, info.st_mode & S_IFMT == S_IFDIR else { return false }
        return info.st_size == emptySize
    }

    /// The size of the folder at `path` if it is empty and its size counts its entries: a probe
    /// file made and removed must change it and then restore it (tmpfs does; ext4 does not).
    private static func emptySizeIfCounting(_ path: String) -> Int? {
        let fd = open(path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        guard entryNames(of: fd).isEmpty, let empty = size(of: fd) else { return nil }
        let probe = ".kiln-scratch-probe"
        let file = openat(fd, probe, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
        guard file >= 0 else { return nil }
        close(file)
        let holdingOne = size(of: fd)
        guard unlinkat(fd, probe, 0) == 0, let holdingOne, holdingOne != empty, size(of: fd) == empty else { return nil }
        return empty
    }

    private static func size(of fd: Int32) -> Int? {
        var info = stat()
        return fstat(fd, &info) == 0 ? info.st_size : nil
    }

    /// The names in the directory `fd`, without `.` and `..`.
    private static func entryNames(of fd: Int32) -> [String] {
        // A copy: the stream closes the descriptor it reads.
        let copy = dup(fd)
        guard copy >= 0 else { return [] }
        guard let directory = fdopendir(copy) else {
            close(copy)
            return []
        }
        // The copy shares the original's offset, which an earlier listing left at the end.
        rewinddir(directory)
        return directoryEntryNames(closing: directory)
    }

    /// Removes everything below the directory `fd`, without following symbolic links.
    private static func removeContents(of fd: Int32) {
        for name in entryNames(of: fd) {
            var info = stat()
            guard fstatat(fd, name, &info, AT_SYMLINK_NOFOLLOW) == 0 else { continue }
            if info.st_mode & S_IFMT == S_IFDIR {
                let child = openat(fd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
                if child >= 0 {
                    removeContents(of: child)
                    close(child)
                }
                _ = unlinkat(fd, name, AT_REMOVEDIR)
            } else {
                _ = unlinkat(fd, name, 0)
            }
        }
    }
}
