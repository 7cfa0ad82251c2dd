// swift-tools-version:6.0
import PackageDescription

let package = Package(
    name: "kiln",
    platforms: [.macOS(.v14)],
    products: [
        .library(name: "KilnWire", targets: ["KilnWire"]),
        .executable(name: "kiln-agent", targets: ["kiln-agent"]),
        .executable(name: "kiln-examples", targets: ["kiln-examples"]),
        .executable(name: "kiln-bench", targets: ["kiln-bench"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
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
        .target(
            name: "KilnWire",
            dependencies: ["CMsgPack"]
        ),
        // SHA-256 in plain Swift, without Foundation: image hashes on the host, the sha256
        // example method in the guest.
        .target(name: "KilnDigest"),
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
            name: "kiln-bench",
            dependencies: [
                "KilnWire",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
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
    ],
    swiftLanguageModes: [.v6]
)
