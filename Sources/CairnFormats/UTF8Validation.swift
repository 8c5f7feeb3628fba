/// UTF-8 validity (RFC 3629): the readers refuse invalid text, the writers repair it.
package enum UTF8Validation {
    /// The index of the first byte that breaks UTF-8 (overlong forms, surrogates and scalars
    /// past U+10FFFF included), or nil when every byte is part of a valid sequence.
    package static func firstInvalidByte(_ bytes: UnsafeBufferPointer<UInt8>) -> Int? {
        var i = 0
        // ASCII runs, eight bytes at a time.
        if let base = bytes.baseAddress {
            while i + 8 <= bytes.count {
                if UnsafeRawPointer(base + i).loadUnaligned(as: UInt64.self) & 0x8080_8080_8080_8080 != 0 { break }
                i += 8
            }
        }
        while i < bytes.count {
            let lead = bytes[i]
            let length: Int
            let minimum: UInt32
            switch lead {
            case 0x00...0x7F:
                i += 1
                continue
            case 0xC2...0xDF: (length, minimum) = (2, 0x80)
            case 0xE0...0xEF: (length, minimum) = (3, 0x800)
            case 0xF0...0xF4: (length, minimum) = (4, 0x10000)
            default: return i
            }
            guard i + length <= bytes.count else { return i }
            var scalar = UInt32(lead) & (0xFF >> (length + 1))
            for k in 1..<length {
                let next = bytes[i + k]
                guard next & 0xC0 == 0x80 else { return i }
                scalar = scalar << 6 | UInt32(next & 0x3F)
            }
            if scalar < minimum || scalar > 0x10FFFF || (0xD800...0xDFFF).contains(scalar) { return i }
            i += length
        }
        return nil
    }

    /// Calls `body` with `bytes` as they are when they are valid UTF-8 (no copy), otherwise
    /// with a copy in which every invalid sequence is U+FFFD, as `String(decoding:as:)` makes
    /// it. SQL can make such text (`CAST(x'ff' AS TEXT)`); outputs carry U+FFFD then.
    package static func withRepaired<R>(_ bytes: UnsafeRawBufferPointer, _ body: (UnsafeBufferPointer<UInt8>) throws -> R) rethrows -> R {
        try bytes.withMemoryRebound(to: UInt8.self) { utf8 in
            guard firstInvalidByte(utf8) != nil else { return try body(utf8) }
            let repaired = Array(String(decoding: utf8, as: UTF8.self).utf8)
            return try repaired.withUnsafeBufferPointer(body)
        }
    }
}
