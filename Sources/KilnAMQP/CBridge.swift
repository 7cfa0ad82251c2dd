import CRabbitMQ
#if canImport(Glibc)
import Glibc
#endif

/// C memory for one call into rabbitmq-c: strings, tables and arrays that must outlive the
/// Swift values they came from until the call returns, freed together afterwards.
final class CArena {
    private var allocations: [UnsafeMutableRawPointer] = []

    deinit {
        for pointer in allocations { free(pointer) }
    }

    private func allocate(_ count: Int) -> UnsafeMutableRawPointer {
        let pointer = malloc(max(count, 1))!
        allocations.append(pointer)
        return pointer
    }

    /// `bytes` copied into the arena.
    func bytes(_ bytes: some Collection<UInt8>) -> amqp_bytes_t {
        let pointer = allocate(bytes.count)
        UnsafeMutableRawBufferPointer(start: pointer, count: bytes.count).copyBytes(from: bytes)
        return amqp_bytes_t(len: bytes.count, bytes: pointer)
    }

    /// `string`'s UTF-8 copied into the arena.
    func bytes(_ string: String) -> amqp_bytes_t { bytes(string.utf8) }

    /// A field table for `table`.
    func table(_ table: [String: AMQPFieldValue]) -> amqp_table_t {
        guard !table.isEmpty else { return amqp_empty_table }
        let entries = allocate(MemoryLayout<amqp_table_entry_t>.stride * table.count)
            .bindMemory(to: amqp_table_entry_t.self, capacity: table.count)
        for (index, (key, value)) in table.sorted(by: { $0.key < $1.key }).enumerated() {
            (entries + index).initialize(to: amqp_table_entry_t(key: bytes(key), value: field(value)))
        }
        return amqp_table_t(num_entries: Int32(table.count), entries: entries)
    }

    private func field(_ value: AMQPFieldValue) -> amqp_field_value_t {
        var field = amqp_field_value_t()
        switch value {
        case .bool(let bool):
            field.kind = UInt8(AMQP_FIELD_KIND_BOOLEAN.rawValue)
            field.value.boolean = bool ? 1 : 0
        case .int(let int):
            field.kind = UInt8(AMQP_FIELD_KIND_I64.rawValue)
            field.value.i64 = int
        case .double(let double):
            field.kind = UInt8(AMQP_FIELD_KIND_F64.rawValue)
            field.value.f64 = double
        case .string(let string):
            field.kind = UInt8(AMQP_FIELD_KIND_UTF8.rawValue)
            field.value.bytes = bytes(string)
        case .bytes(let data):
            field.kind = UInt8(AMQP_FIELD_KIND_BYTES.rawValue)
            field.value.bytes = bytes(data)
        case .timestamp(let seconds):
            field.kind = UInt8(AMQP_FIELD_KIND_TIMESTAMP.rawValue)
            field.value.u64 = seconds
        case .array(let elements):
            field.kind = UInt8(AMQP_FIELD_KIND_ARRAY.rawValue)
            let storage = allocate(MemoryLayout<amqp_field_value_t>.stride * max(elements.count, 1))
                .bindMemory(to: amqp_field_value_t.self, capacity: max(elements.count, 1))
            for (index, element) in elements.enumerated() { (storage + index).initialize(to: self.field(element)) }
            field.value.array = amqp_array_t(num_entries: Int32(elements.count), entries: storage)
        case .table(let nested):
            field.kind = UInt8(AMQP_FIELD_KIND_TABLE.rawValue)
            field.value.table = table(nested)
        case .void:
            field.kind = UInt8(AMQP_FIELD_KIND_VOID.rawValue)
        }
        return field
    }

    /// rabbitmq-c properties for `properties`.
    func properties(_ properties: AMQPProperties) -> amqp_basic_properties_t {
        var result = amqp_basic_properties_t()
        var flags: amqp_flags_t = 0
        func set(_ value: String?, _ flag: amqp_flags_t, _ field: WritableKeyPath<amqp_basic_properties_t, amqp_bytes_t>) {
            guard let value else { return }
            result[keyPath: field] = bytes(value)
            flags |= flag
        }
        set(properties.contentType, KILN_AMQP_BASIC_CONTENT_TYPE_FLAG, \.content_type)
        set(properties.contentEncoding, KILN_AMQP_BASIC_CONTENT_ENCODING_FLAG, \.content_encoding)
        set(properties.correlationID, KILN_AMQP_BASIC_CORRELATION_ID_FLAG, \.correlation_id)
        set(properties.replyTo, KILN_AMQP_BASIC_REPLY_TO_FLAG, \.reply_to)
        set(properties.expiration, KILN_AMQP_BASIC_EXPIRATION_FLAG, \.expiration)
        set(properties.messageID, KILN_AMQP_BASIC_MESSAGE_ID_FLAG, \.message_id)
        set(properties.type, KILN_AMQP_BASIC_TYPE_FLAG, \.type)
        set(properties.appID, KILN_AMQP_BASIC_APP_ID_FLAG, \.app_id)
        if !properties.headers.isEmpty {
            result.headers = table(properties.headers)
            flags |= KILN_AMQP_BASIC_HEADERS_FLAG
        }
        if let mode = properties.deliveryMode {
            result.delivery_mode = mode
            flags |= KILN_AMQP_BASIC_DELIVERY_MODE_FLAG
        }
        if let priority = properties.priority {
            result.priority = priority
            flags |= KILN_AMQP_BASIC_PRIORITY_FLAG
        }
        if let timestamp = properties.timestamp {
            result.timestamp = timestamp
            flags |= KILN_AMQP_BASIC_TIMESTAMP_FLAG
        }
        result._flags = flags
        return result
    }
}

extension amqp_bytes_t {
    /// The bytes as a string (lossy for invalid UTF-8, which AMQP short strings should not hold).
    var string: String {
        guard len > 0, let bytes else { return "" }
        return String(decoding: UnsafeRawBufferPointer(start: bytes, count: len), as: UTF8.self)
    }

    /// A copy of the bytes.
    var array: [UInt8] {
        guard len > 0, let bytes else { return [] }
        return [UInt8](UnsafeRawBufferPointer(start: bytes, count: len))
    }
}

extension amqp_table_t {
    /// The table as Swift values.
    var swiftTable: [String: AMQPFieldValue] {
        var table: [String: AMQPFieldValue] = [:]
        for index in 0..<Int(num_entries) {
            let entry = entries[index]
            table[entry.key.string] = entry.value.swiftValue
        }
        return table
    }
}

extension amqp_field_value_t {
    /// The value as a Swift value; integers of every width become `.int`.
    var swiftValue: AMQPFieldValue {
        switch Int32(kind) {
        case Int32(AMQP_FIELD_KIND_BOOLEAN.rawValue): return .bool(value.boolean != 0)
        case Int32(AMQP_FIELD_KIND_I8.rawValue): return .int(Int64(value.i8))
        case Int32(AMQP_FIELD_KIND_U8.rawValue): return .int(Int64(value.u8))
        case Int32(AMQP_FIELD_KIND_I16.rawValue): return .int(Int64(value.i16))
        case Int32(AMQP_FIELD_KIND_U16.rawValue): return .int(Int64(value.u16))
        case Int32(AMQP_FIELD_KIND_I32.rawValue): return .int(Int64(value.i32))
        case Int32(AMQP_FIELD_KIND_U32.rawValue): return .int(Int64(value.u32))
        case Int32(AMQP_FIELD_KIND_I64.rawValue): return .int(value.i64)
        case Int32(AMQP_FIELD_KIND_U64.rawValue): return .int(Int64(truncatingIfNeeded: value.u64))
        case Int32(AMQP_FIELD_KIND_F32.rawValue): return .double(Double(value.f32))
        case Int32(AMQP_FIELD_KIND_F64.rawValue): return .double(value.f64)
        case Int32(AMQP_FIELD_KIND_DECIMAL.rawValue):
            var scaled = Double(value.decimal.value)
            for _ in 0..<value.decimal.decimals { scaled /= 10 }
            return .double(scaled)
        case Int32(AMQP_FIELD_KIND_UTF8.rawValue): return .string(value.bytes.string)
        case Int32(AMQP_FIELD_KIND_BYTES.rawValue): return .bytes(value.bytes.array)
        case Int32(AMQP_FIELD_KIND_TIMESTAMP.rawValue): return .timestamp(value.u64)
        case Int32(AMQP_FIELD_KIND_ARRAY.rawValue):
            return .array((0..<Int(value.array.num_entries)).map { value.array.entries[$0].swiftValue })
        case Int32(AMQP_FIELD_KIND_TABLE.rawValue): return .table(value.table.swiftTable)
        default: return .void
        }
    }
}

extension amqp_basic_properties_t {
    /// The properties as Swift values.
    var swiftProperties: AMQPProperties {
        func get(_ flag: amqp_flags_t, _ field: amqp_bytes_t) -> String? { _flags & flag != 0 ? field.string : nil }
        return AMQPProperties(
            contentType: get(KILN_AMQP_BASIC_CONTENT_TYPE_FLAG, content_type),
            contentEncoding: get(KILN_AMQP_BASIC_CONTENT_ENCODING_FLAG, content_encoding),
            headers: _flags & KILN_AMQP_BASIC_HEADERS_FLAG != 0 ? headers.swiftTable : [:],
            deliveryMode: _flags & KILN_AMQP_BASIC_DELIVERY_MODE_FLAG != 0 ? delivery_mode : nil,
            priority: _flags & KILN_AMQP_BASIC_PRIORITY_FLAG != 0 ? priority : nil,
            correlationID: get(KILN_AMQP_BASIC_CORRELATION_ID_FLAG, correlation_id),
            replyTo: get(KILN_AMQP_BASIC_REPLY_TO_FLAG, reply_to),
            expiration: get(KILN_AMQP_BASIC_EXPIRATION_FLAG, expiration),
            messageID: get(KILN_AMQP_BASIC_MESSAGE_ID_FLAG, message_id),
            timestamp: _flags & KILN_AMQP_BASIC_TIMESTAMP_FLAG != 0 ? timestamp : nil,
            type: get(KILN_AMQP_BASIC_TYPE_FLAG, type),
            appID: get(KILN_AMQP_BASIC_APP_ID_FLAG, app_id)
        )
    }
}
