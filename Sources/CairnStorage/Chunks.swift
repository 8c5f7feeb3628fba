extension Collection {
    /// Consecutive slices of at most `size` elements, in order (the last may be shorter; none
    /// when the collection is empty): the rows of each multi-row statement, kept under both
    /// engines' bind limits, or the recipients of each batched transaction.
    package func chunks(of size: Int) -> [SubSequence] {
        precondition(size > 0, "a chunk holds at least one element")
        var chunks: [SubSequence] = []
        var start = startIndex
        while start != endIndex {
            let end = index(start, offsetBy: size, limitedBy: endIndex) ?? endIndex
            chunks.append(self[start..<end])
            start = end
        }
        return chunks
    }
}
