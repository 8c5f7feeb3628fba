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
        var state: UInt64 = 42
        let reference = (0..<1_000).map { _ -> UInt8 in
            state = state &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
            return UInt8(truncatingIfNeeded: state >> 33)
        }
        #expect(noiseBytes(1_000, seed: 42) == reference)
        #expect(noiseBytes(1_000, seed: 43) != reference)
        #expect(repeatedBytes("x", count: 3) == Array("xxx".utf8))
    }
}
