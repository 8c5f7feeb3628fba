/// Work handed over by many tasks and carried out in batches by one drainer at a time: the
/// hand-over that finds no drainer running starts one, which takes batches until nothing is
/// pending, so what arrives while a batch is worked on goes together in the next one (SQLite's
/// group commit, the notification hub's reads of announced rows).
///
/// A value kept in its owner's lock, beside whatever else the lock guards:
/// ```swift
/// if state.withLock({ $0.pending.add(contentsOf: items) }) { Task { await drain() } }
/// // drain(): take `state.withLock { $0.pending.next(upTo: 256) }` and work on it until it is empty
/// ```
package struct PendingBatches<Item> {
    @usableFromInline var pending: [Item] = []
    @usableFromInline var draining = false

    /// Nothing pending, no drainer.
    package init() {}

    /// Adds `items` to what is pending.
    /// - Returns: true when the caller must start a drainer (none runs; this call counts it as
    ///   running until ``next(upTo:)`` finds nothing left).
    @inlinable
    package mutating func add(contentsOf items: some Sequence<Item>) -> Bool {
        pending.append(contentsOf: items)
        return startDrain()
    }

    /// Adds `item` to what is pending; see ``add(contentsOf:)``.
    @inlinable
    package mutating func add(_ item: consuming Item) -> Bool {
        pending.append(item)
        return startDrain()
    }

    @inlinable
    mutating func startDrain() -> Bool {
        if draining { return false }
        draining = true
        return true
    }

    /// The drainer's next batch: the oldest `limit` items at most, in the order they came;
    /// empty when nothing is pending, which ends the drain (the next hand-over starts one).
    @inlinable
    package mutating func next(upTo limit: Int) -> [Item] {
        if pending.isEmpty {
            draining = false
            return []
        }
        let count = min(pending.count, limit)
        let batch = Array(pending.prefix(count))
        pending.removeFirst(count)
        return batch
    }
}

extension PendingBatches: Sendable where Item: Sendable {}
