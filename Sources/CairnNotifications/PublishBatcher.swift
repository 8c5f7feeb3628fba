import CairnHTTP
import CairnStorage
import Foundation
import SQLKit
import Synchronization
import Tracing

/// Group commit for publishes on one node: publishes that arrive while batches are being stored
/// (at most ``maximumInFlight`` at once) wait, and the next batch stores all of them in one transaction, with one counter upsert, one
/// multi-row INSERT and one announcement, so a commit (and its fsync) is paid once per batch
/// instead of once per notification. Under no load a batch holds one publish, so nothing waits
/// longer than its own transaction.
///
/// Guarantees, as for a publish alone: no caller is answered before the COMMIT holding its rows
/// succeeded (durable before the answer); live delivery is announced in the transaction, so it
/// happens after the commit; each user's seqs are allocated under the counter's row lock, in
/// the batch's order of arrival. A batch whose statements fail (one publish's observer
/// throwing, a row the database refuses) is rolled back as a whole and its publishes are
/// retried one transaction each, so the failure reaches only the publish that caused it. A
/// failed COMMIT fails every publish of its batch, none retried (whether it committed is not
/// known), as a COMMIT of a publish alone would. A publisher's request that names an id that
/// is no user of its tenant is refused alone, inside the batch's transaction, from the same
/// locked read of the recipients that the others are stored by.
final class PublishBatcher: Sendable {
    /// One waiting publish (recipients distinct and sorted) and its caller.
    struct Unit: Sendable {
        let publish: Publish
        let continuation: CheckedContinuation<[StoredNotification], any Error>
    }

    private struct State {
        var pending: [Unit] = []
        /// Batches being stored now.
        var inFlight = 0
        /// Callers of ``waitUntilPending(_:)``: how many pending publishes each waits for.
        var waiters: [(count: Int, continuation: CheckedContinuation<Void, Never>)] = []
    }

    private let database: Database
    private let hub: NotificationHub
    private let observers: [any PublishObserver]
    /// Upper bound on the rows (recipients) of one batch, so its statements stay well under
    /// both engines' limits on bound parameters.
    let maximumRows: Int
    /// How many batches may be stored at once: while one waits for the database (a round
    /// trip, its COMMIT's fsync), the next is built and sent. Counter row locks, taken in one
    /// order, keep each user's seqs in commit order across them.
    let maximumInFlight: Int
    private let state = Mutex(State())
    /// Transactions opened to publish on this node, batched or not (see
    /// ``Notifier/publishTransactions``).
    let transactions = Atomic<Int>(0)

    init(database: Database, hub: NotificationHub, observers: [any PublishObserver], maximumRows: Int, maximumInFlight: Int) {
        self.database = database
        self.hub = hub
        self.observers = observers
        self.maximumRows = max(1, maximumRows)
        self.maximumInFlight = max(1, maximumInFlight)
    }

    /// Stores `draft` for `userIds` (distinct, sorted, at most ``maximumRows``) in the next
    /// batch; returns once that batch committed. With `checkingMembership`, the publish is
    /// refused unless every recipient is a user of `tenantId`, judged by the batch's one
    /// locked read of its recipients inside its transaction (the read the store uses too), so
    /// no separate read precedes the batch and no deletion can fall between check and store.
    /// - Throws: ``NotTenantMembers`` (nothing stored) when a checked recipient is not one.
    func submit(_ draft: NotificationDraft, tenantId: String, userIds: [String], now: Int64, checkingMembership: Bool = false) async throws
        -> [StoredNotification]
    {
        try await withCheckedThrowingContinuation { continuation in
            let publish = Publish(draft: draft, tenantId: tenantId, userIds: userIds, now: now, checksMembership: checkingMembership)
            let (startDrain, ready) = state.withLock { state -> (Bool, [CheckedContinuation<Void, Never>]) in
                state.pending.append(Unit(publish: publish, continuation: continuation))
                var ready: [CheckedContinuation<Void, Never>] = []
                let count = state.pending.count
                state.waiters.removeAll { waiter in
                    guard waiter.count <= count else { return false }
                    ready.append(waiter.continuation)
                    return true
                }
                if state.inFlight >= maximumInFlight { return (false, ready) }
                state.inFlight += 1
                return (true, ready)
            }
            for waiter in ready { waiter.resume() }
            if startDrain { Task { await self.drain() } }
        }
    }

    /// Returns once at least `count` publishes wait for a batch: a test holds a batch open
    /// with it (from an observer) to see the ones arriving meanwhile stored together.
    func waitUntilPending(_ count: Int) async {
        await withCheckedContinuation { continuation in
            let now = state.withLock { state -> Bool in
                if state.pending.count >= count { return true }
                state.waiters.append((count, continuation))
                return false
            }
            if now { continuation.resume() }
        }
    }

    private func drain() async {
        while true {
            let batch = state.withLock { state -> [Unit] in
                var rows = 0
                var taken = 0
                for unit in state.pending {
                    if taken > 0 && rows + unit.publish.userIds.count > maximumRows { break }
                    rows += unit.publish.userIds.count
                    taken += 1
                }
                if taken == 0 {
                    state.inFlight -= 1
                    return []
                }
                let batch = Array(state.pending.prefix(taken))
                state.pending.removeFirst(taken)
                return batch
            }
            if batch.isEmpty { return }
            await run(batch)
        }
    }

    private func run(_ batch: [Unit]) async {
        for unit in batch where unit.publish.checksMembership {
            for observer in observers { await observer.willStoreCheckedPublish(to: unit.publish.userIds, tenantId: unit.publish.tenantId) }
        }
        if batch.count == 1 {
            let unit = batch[0]
            unit.continuation.resume(with: await outcome { try await self.storeAlone(unit) })
            return
        }
        let observers = self.observers
        let hub = self.hub
        // Set when the body finished: an error after it is the COMMIT's, whose outcome is unknown.
        let bodyDone = Atomic<Bool>(false)
        transactions.add(1, ordering: .relaxed)
        let result = await outcome {
            try await TraceContext.withSpan("notification publish batch", ofKind: .producer) { span in
                span.attributes["cairn.notification.batch"] = batch.count
                return try await database.transaction { db in
                    // One read for the batch: who is a user of which tenant (the membership
                    // check of publishers' requests) and their preferences, locked until the commit.
                    let outcomes = try await PublishStore.storeAndAnnounce(batch.map(\.publish), observers: observers, hub: hub, on: db)
                    bodyDone.store(true, ordering: .relaxed)
                    return outcomes
                }
            }
        }
        switch result {
        case .success(let outcomes):
            for (unit, stored) in zip(batch, outcomes) { unit.continuation.resume(with: stored.mapError { $0 as any Error }) }
        case .failure(let error) where bodyDone.load(ordering: .relaxed):
            for unit in batch { unit.continuation.resume(throwing: error) }
        case .failure:
            // Rolled back whole: each publish again on its own, so only the failing one fails.
            for unit in batch { unit.continuation.resume(with: await outcome { try await self.storeAlone(unit) }) }
        }
    }

    /// One publish in a transaction of its own, stored as a batch of one (a publisher's
    /// request refused there with ``NotTenantMembers``, nothing stored).
    private func storeAlone(_ unit: Unit) async throws -> [StoredNotification] {
        transactions.add(1, ordering: .relaxed)
        let observers = self.observers
        let hub = self.hub
        return try await database.transaction { db in
            try await PublishStore.storeAndAnnounce([unit.publish], observers: observers, hub: hub, on: db)[0].get()
        }
    }
}

/// What `body` returns or throws, as a value.
private func outcome<T: Sendable>(_ body: () async throws -> T) async -> Result<T, any Error> {
    do {
        return .success(try await body())
    } catch {
        return .failure(error)
    }
}
