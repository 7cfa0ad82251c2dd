import ArgumentParser
import Foundation
import KilnWire

/// `kiln-bench wire`: encode+decode of execution contexts through KilnWire (MessagePack on
/// msgpack-c) beside Foundation's JSONEncoder/JSONDecoder, in the same run.
struct WireBenchmark: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "wire",
        abstract: "Execution-context serialization: KilnWire MessagePack against Foundation JSON."
    )

    @Option(help: "Seconds to measure each row.")
    var seconds: Double = 2

    func run() throws {
        print("kiln-bench wire: encode+decode round trips, best of 5 rounds over \(seconds) s per row")
        var table = TextTable("context", "codec", "body bytes", "round trips/s", "MB/s", "vs JSON")
        let state = (0..<1_024).map { UInt8(truncatingIfNeeded: $0 &* 31) }
        try measure("session: 20 fields, 1 KiB state", SessionContext(state: state),
                    SessionContext(state: Data(state)), into: &table)
        try measure("dense: 70 values, 768 B state", DenseContext(state: Array(state.prefix(768))),
                    DenseContext(state: Data(state.prefix(768))), into: &table)
        var generator = SystemRandomNumberGenerator()
        let blob = (0..<(1 << 20)).map { _ in UInt8.random(in: 0...255, using: &generator) }
        try measure("session + 1 MiB blob", SessionContext(state: blob), SessionContext(state: Data(blob)), into: &table)
        print(table.render())
        print("MB/s counts the context's MessagePack size per round trip, for both codecs; bytes are")
        print("a MessagePack bin for KilnWire and base64 (Data) for JSON, each codec's own form.")
    }

    /// Measures one context both ways and adds its two rows.
    func measure<Packed: Codable & Equatable, JSON: Codable>(
        _ name: String, _ packed: Packed, _ json: JSON, into table: inout TextTable
    ) throws {
        let encoder = MessagePackEncoder()
        let decoder = MessagePackDecoder()
        let body = try encoder.encode(packed)
        guard try decoder.decode(Packed.self, from: body) == packed else {
            throw ValidationError("the MessagePack round trip changed the \(name) context")
        }
        let msgpackRate = try bestRate(seconds: seconds) {
            _ = try decoder.decode(Packed.self, from: try encoder.encode(packed))
        }

        let jsonEncoder = JSONEncoder()
        let jsonDecoder = JSONDecoder()
        let jsonBody = try jsonEncoder.encode(json)
        let jsonRate = try bestRate(seconds: seconds) {
            _ = try jsonDecoder.decode(JSON.self, from: try jsonEncoder.encode(json))
        }

        let megabytes = Double(body.count) / 1e6
        table.add(name, "KilnWire msgpack", formatted(Double(body.count)), formatted(msgpackRate),
                  formatted(msgpackRate * megabytes, decimals: 1), formatted(msgpackRate / jsonRate, decimals: 1) + "x")
        table.add("", "Foundation JSON", formatted(Double(jsonBody.count)), formatted(jsonRate),
                  formatted(jsonRate * megabytes, decimals: 1), "1.0x")
    }
}

/// A method's session context: identity, a score of scalar fields, and its opaque state.
/// `Blob` is `[UInt8]` for MessagePack (a bin) and `Data` for JSON (base64), each codec's
/// natural form for bytes.
struct SessionContext<Blob: Codable & Equatable>: Codable, Equatable {
    var invocationID = "0f8fad5b-d9cb-469f-a165-70867728950e"
    var method = "checkout.price"
    var attempt = 1
    var deadlineMs = 5_000
    var submittedAtUs: UInt64 = 1_795_939_200_000_000
    var userID = "user-00017"
    var tenant = "acme-eu-west"
    var region = "eu-west-1"
    var locale = "de-DE"
    var currency = "EUR"
    var cartTotal = 1_284.75
    var itemCount = 7
    var step = 3
    var retries = 0
    var score = 0.8125
    var cacheHit = true
    var startedAtUs: UInt64 = 1_795_939_199_998_000
    var lastError: String? = nil
    var flags = ["express", "gift-wrap", "loyalty"]
    var state: Blob

    init(state: Blob) {
        self.state = state
    }
}

/// A context dense in small scalars: arrays of numbers and names, nested records, tags.
struct DenseContext<Blob: Codable & Equatable>: Codable, Equatable {
    struct Locals: Codable, Equatable {
        var counter = 41_977
        var total = 12_345.678
        var ratio = 0.8125
        var enabled = true
        var label = "checkout-pipeline/stage-3"
        var history = Array(stride(from: 1_000, to: 1_400, by: 20))
        var names = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta"]
        var window = (0..<16).map { Double($0) * 1.25 + 0.1 }
        var owner = Owner()
    }

    struct Owner: Codable, Equatable {
        var id = "user-00017"
        var tenant = "acme-eu-west"
        var quota = 5_000
    }

    var invocationID = "0f8fad5b-d9cb-469f-a165-70867728950e"
    var method = "wordcount"
    var attempt = 1
    var deadlineMs = 5_000
    var submittedAtUs: UInt64 = 1_795_939_200_000_000
    var locals = Locals()
    var tags = ["region": "eu-west-1", "tier": "gold", "team": "payments", "release": "2026.11.3", "canary": "false"]
    var state: Blob

    init(state: Blob) {
        self.state = state
    }
}
