/// Deterministic test bytes that do not repeat within a megabyte: byte `i` is
/// `UInt8(truncatingIfNeeded: i &* multiplier &+ i >> shift)`, so a byte served from the wrong
/// offset shows. `range` selects which bytes of the endless pattern to make.
///
/// A plain loop on purpose: tests are built unoptimised, where `(0..<n).map { … }` goes through
/// unspecialised generic code (measured: 16 s for 12 MiB on a busy machine, this loop 0.16 s).
/// That time is spent on the test process's few executor threads, where it stalls every node
/// the other tests are running.
package func patternBytes(_ range: Range<Int>, multiplier: Int = 31, shift: Int = 9) -> [UInt8] {
    [UInt8](unsafeUninitializedCapacity: range.count) { buffer, initialized in
        guard let base = buffer.baseAddress else { return }
        var index = range.lowerBound
        while index < range.upperBound {
            (base + (index - range.lowerBound)).initialize(to: UInt8(truncatingIfNeeded: index &* multiplier &+ index >> shift))
            index &+= 1
        }
        initialized = range.count
    }
}

/// `count` bytes of ``SeededGenerator``'s sequence started at `seed` (eight bytes a draw):
/// noise that differs from one offset to the next, the same for the same seed. A plain loop, as
/// ``patternBytes(_:multiplier:shift:)``.
package func noiseBytes(_ count: Int, seed: UInt64) -> [UInt8] {
    [UInt8](unsafeUninitializedCapacity: count) { buffer, initialized in
        guard let base = buffer.baseAddress else { return }
        var generator = SeededGenerator(seed: seed)
        var offset = 0
        while offset < count {
            var draw = generator.next()
            var byte = 0
            while byte < 8 && offset < count {
                (base + offset).initialize(to: UInt8(truncatingIfNeeded: draw))
                draw >>= 8
                byte += 1
                offset &+= 1
            }
        }
        initialized = count
    }
}
