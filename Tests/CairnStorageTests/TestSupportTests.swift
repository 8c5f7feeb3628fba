import CairnTestSupport
import Testing

/// The test support's own promises, which the other suites' reliability rests on.
@Suite("Test support: dedicated threads and test bytes")
struct TestSupportTests {
    /// A test with the trait runs on the dedicated threads, after a suspension too, and so do
    /// the child tasks it starts.
    @Test(.dedicatedThreads) func aDedicatedThreadsTestRunsOnItsOwnThreads() async {
        #expect(DedicatedThreads.shared.isCurrent)
        await Task.yield()
        #expect(DedicatedThreads.shared.isCurrent)
        let child = await withTaskGroup(of: Bool.self) { group in
            group.addTask { DedicatedThreads.shared.isCurrent }
            return await group.next() ?? false
        }
        #expect(child)
    }

    /// Without the trait, a test runs on the executor the nodes share.
    @Test func otherTestsRunOnTheSharedExecutor() async {
        #expect(!DedicatedThreads.shared.isCurrent)
    }

    /// The loops make the bytes the formulas they document make, for any range.
    @Test func patternAndNoiseBytesFollowTheirFormulas() {
        #expect(patternBytes(0..<0).isEmpty)
        for range in [0..<600, 511..<1_537, 12_345..<12_400] {
            #expect(patternBytes(range) == range.map { UInt8(truncatingIfNeeded: $0 &* 31 &+ $0 >> 9) })
            #expect(patternBytes(range, multiplier: 7, shift: 11) == range.map { UInt8(truncatingIfNeeded: $0 &* 7 &+ $0 >> 11) })
        }
        var generator = SeededGenerator(seed: 42)
        let reference = (0..<125).flatMap { _ -> [UInt8] in
            let draw = generator.next()
            return (0..<8).map { UInt8(truncatingIfNeeded: draw >> (8 * $0)) }
        }
        #expect(noiseBytes(1_000, seed: 42) == reference)
        #expect(noiseBytes(997, seed: 42) == Array(reference.prefix(997)))
        #expect(noiseBytes(1_000, seed: 43) != reference)
    }
}
