import CairnStorage
import Testing

@Suite("Storage: chunks of rows")
struct ChunksTests {
    /// Every element once, in order, in slices of the size asked for but the last.
    @Test(arguments: [(0, 3, [Int]()), (6, 3, [3, 3]), (7, 3, [3, 3, 1]), (2, 5, [2]), (4, 1, [1, 1, 1, 1])])
    func chunksKeepEveryElementInOrder(count: Int, size: Int, sizes: [Int]) {
        let rows = Array(0..<count)
        let chunks = rows.chunks(of: size)
        #expect(chunks.map(\.count) == sizes)
        #expect(chunks.flatMap { $0 } == rows)
    }
}
