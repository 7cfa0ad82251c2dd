/// Finds the xz stream inside a compressed kernel image (`vmlinuz`): its payload starts with the
/// xz magic `FD 37 7A 58 5A 00`. The bytes before it are the boot stub; more than one match is
/// possible, so callers try each until one decompresses to an ELF file.
public enum XZPayload {
    /// The six bytes that open every xz stream.
    public static let magic: [UInt8] = [0xFD, 0x37, 0x7A, 0x58, 0x5A, 0x00]
    /// The four bytes that open every ELF file.
    public static let elfMagic: [UInt8] = [0x7F, 0x45, 0x4C, 0x46]

    /// Offsets of every xz magic in `bytes`, in order.
    public static func offsets(in bytes: [UInt8]) -> [Int] {
        guard bytes.count >= magic.count else { return [] }
        var found: [Int] = []
        bytes.withUnsafeBufferPointer { buffer in
            var index = 0
            let last = buffer.count - magic.count
            while index <= last {
                if buffer[index] == 0xFD && buffer[index + 1] == 0x37 && buffer[index + 2] == 0x7A
                    && buffer[index + 3] == 0x58 && buffer[index + 4] == 0x5A && buffer[index + 5] == 0x00
                {
                    found.append(index)
                    index += magic.count
                } else {
                    index += 1
                }
            }
        }
        return found
    }

    /// True when `bytes` begins like an ELF file.
    public static func isELF(_ bytes: some Collection<UInt8>) -> Bool {
        bytes.prefix(4).elementsEqual(elfMagic)
    }
}
