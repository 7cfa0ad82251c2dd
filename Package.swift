// swift-tools-version:6.0
import PackageDescription

let package = Package(
    name: "kiln",
    platforms: [.macOS(.v14)],
    products: [
        .library(name: "KilnWire", targets: ["KilnWire"]),
        .library(name: "KilnVM", targets: ["KilnVM"]),
        .executable(name: "kiln-agent", targets: ["kiln-agent"]),
        .executable(name: "kiln-examples", targets: ["kiln-examples"]),
        .executable(name: "kiln-image", targets: ["kiln-image"]),
        .executable(name: "kiln-bench", targets: ["kiln-bench"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/apple/swift-log", from: "1.6.0"),
    ],
    targets: [
        .systemLibrary(
            name: "CMsgPack",
            pkgConfig: "msgpack",
            providers: [.apt(["libmsgpack-dev"])]
        ),
        .systemLibrary(
            name: "CRabbitMQ",
            pkgConfig: "librabbitmq",
            providers: [.apt(["librabbitmq-dev"])]
        ),
        // Linux calls the Glibc module lacks (epoll, eventfd, clone flags, pidfd), and fork/clone +
        // exec, which Swift cannot do safely itself: namespaces, cgroup placement
        // before exec, the death signal, the descriptor table of the child.
        .target(name: "CKilnHost"),
        .target(
            name: "KilnWire",
            dependencies: ["CMsgPack"]
        ),
        // SHA-256 in plain Swift, without Foundation: image hashes on the host, the sha256
        // example method in the guest.
        .target(name: "KilnDigest"),
        .target(
            name: "KilnVM",
            dependencies: [
                "KilnWire",
                "KilnDigest",
                "CKilnHost",
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        // The guest agent: KilnWire and Glibc only, no Foundation (it is linked with the Swift
        // stdlib statically and shipped into the guest image).
        .executableTarget(
            name: "kiln-agent",
            dependencies: ["KilnWire"]
        ),
        // The example method programs (echo, sleep, fail, burn, sha256), one static binary.
        .executableTarget(
            name: "kiln-examples",
            dependencies: ["KilnWire", "KilnDigest"]
        ),
        .executableTarget(
            name: "kiln-image",
            dependencies: [
                "KilnVM",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        .executableTarget(
            name: "kiln-bench",
            dependencies: [
                "KilnWire",
                "KilnVM",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        .testTarget(
            name: "KilnWireTests",
            dependencies: ["KilnWire"]
        ),
        .testTarget(
            name: "KilnAMQPTests",
            dependencies: ["KilnWire", "CRabbitMQ"]
        ),
        .testTarget(
            name: "KilnVMTests",
            dependencies: ["KilnVM", "KilnDigest", "KilnWire"]
        ),
        .testTarget(
            name: "KilnVMIntegrationTests",
            dependencies: [
                "KilnVM", "KilnWire",
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
    ],
    swiftLanguageModes: [.v6]
)
