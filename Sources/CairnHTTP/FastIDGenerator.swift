import Synchronization

/// Ids that must be unique, not secret: SplitMix64 over one atomic counter, seeded once from
/// the system's random source. The system's source costs a system call per eight bytes; this
/// costs an atomic add. Used for the trace and span ids of the spans the sampler drops
/// (OpenTelemetry SDKs draw ids from a fast generator too) and for request ids.
package struct FastIDGenerator: RandomNumberGenerator {
    private static let state = Atomic<UInt64>(UInt64.random(in: .min ... .max))

    /// A generator; every instance draws from the same sequence.
    package init() {}

    /// The next 64 random bits.
    package mutating func next() -> UInt64 {
        // SplitMix64 (Steele, Lea, Flood 2014): a Weyl sequence through a bijective mix, so
        // no value repeats before 2^64 draws, whichever thread draws it.
        var z = Self.state.wrappingAdd(0x9E37_79B9_7F4A_7C15, ordering: .relaxed).newValue
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    /// A random UUID (version 4, RFC 9562 §5.4) in lower-case text, 36 characters: what
    /// `UUID().uuidString.lowercased()` gives, without Foundation's system call and `sprintf`.
    package mutating func uuidString() -> String {
        var high = next()
        var low = next()
        high = (high & ~0xF000) | 0x4000  // version 4 in bits 48-51
        low = (low & 0x3FFF_FFFF_FFFF_FFFF) | 0x8000_0000_0000_0000  // variant 10
        return String(unsafeUninitializedCapacity: 36) { buffer in
            let digits: StaticString = "0123456789abcdef"
            var index = 0
            func put(_ value: UInt64, nibbles: Int) {
                for shift in stride(from: (nibbles - 1) * 4, through: 0, by: -4) {
                    buffer[index] = digits.utf8Start[Int((value >> UInt64(shift)) & 0xF)]
                    index += 1
                }
            }
            func dash() {
                buffer[index] = UInt8(ascii: "-")
                index += 1
            }
            put(high >> 32, nibbles: 8)
            dash()
            put(high >> 16, nibbles: 4)
            dash()
            put(high, nibbles: 4)
            dash()
            put(low >> 48, nibbles: 4)
            dash()
            put(low, nibbles: 12)
            return index
        }
    }
}
