import Foundation
import Synchronization

/// UUID version 7 identifiers (RFC 9562 §5.7): 48-bit Unix milliseconds, then random bits.
///
/// Ids sort by creation time, so "newest first" is `ORDER BY id DESC` and keyset cursors are
/// plain ids. Within one process, ids are strictly increasing (RFC 9562 §6.2 method 1: a
/// 12-bit counter in `rand_a`, seeded randomly each millisecond).
package enum UUIDv7 {
    private static let state = Mutex<(milliseconds: UInt64, counter: UInt16)>((0, 0))

    /// A new id as a lowercase hyphenated string.
    package static func make() -> String {
        var generator = SystemRandomNumberGenerator()
        let now = UInt64(WallClock.milliseconds())
        let (ms, counter) = state.withLock { state -> (UInt64, UInt16) in
            if now > state.milliseconds {
                state = (now, UInt16.random(in: 0..<0x400, using: &generator))
            } else if state.counter < 0xFFF {
                state.counter += 1
            } else {
                state = (state.milliseconds + 1, UInt16.random(in: 0..<0x400, using: &generator))
            }
            return (state.milliseconds, state.counter)
        }
        let randomBits = generator.next() as UInt64
        var bytes = [UInt8](repeating: 0, count: 16)
        for index in 0..<6 { bytes[index] = UInt8(truncatingIfNeeded: ms >> (40 - 8 * UInt64(index))) }
        bytes[6] = 0x70 | UInt8(counter >> 8)
        bytes[7] = UInt8(truncatingIfNeeded: counter)
        for index in 8..<16 { bytes[index] = UInt8(truncatingIfNeeded: randomBits >> (8 * UInt64(index - 8))) }
        bytes[8] = 0x80 | (bytes[8] & 0x3F)
        let hex = Array("0123456789abcdef".utf8)
        var out = [UInt8]()
        out.reserveCapacity(36)
        for (index, byte) in bytes.enumerated() {
            if index == 4 || index == 6 || index == 8 || index == 10 { out.append(UInt8(ascii: "-")) }
            out.append(hex[Int(byte >> 4)])
            out.append(hex[Int(byte & 0xF)])
        }
        return String(decoding: out, as: UTF8.self)
    }

    /// `text` in lower case when it is a UUID (``isValid(_:)``), else `text` as it is (for the
    /// caller's own "not found" or "invalid"). RFC 9562 §4 reads UUIDs in either case and writes
    /// them in lower case, the case Cairn stores and compares ids in: every id Cairn reads from a
    /// client (path parameters, bodies) goes through this.
    package static func normalized(_ text: some StringProtocol) -> String {
        isValid(text) ? text.lowercased() : String(text)
    }

    /// True for a canonical lowercase or uppercase hyphenated UUID string of any version.
    package static func isValid(_ text: some StringProtocol) -> Bool {
        let bytes = Array(text.utf8)
        guard bytes.count == 36 else { return false }
        for (index, byte) in bytes.enumerated() {
            if index == 8 || index == 13 || index == 18 || index == 23 {
                if byte != UInt8(ascii: "-") { return false }
            } else if !((byte >= 0x30 && byte <= 0x39) || (byte >= 0x61 && byte <= 0x66) || (byte >= 0x41 && byte <= 0x46)) {
                return false
            }
        }
        return true
    }
}

/// Wall-clock time as Unix epoch milliseconds, the unit every table stores.
package enum WallClock {
    /// Milliseconds since 1970-01-01T00:00:00Z.
    package static func milliseconds() -> Int64 {
        Int64((Date().timeIntervalSince1970 * 1000).rounded(.down))
    }
}
