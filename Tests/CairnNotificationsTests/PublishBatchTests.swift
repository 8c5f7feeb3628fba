import CairnHTTP
import CairnNotifications
import CairnOutbound
import CairnServer
import CairnStorage
import CairnTestSupport
import Foundation
import HTTPTypes
import HummingbirdTesting
import SQLKit
import Synchronization
import Testing

/// Holds the publish titled "first" open inside its transaction until `waiting` more publishes
/// wait for the next batch, and fails every publish titled "poison…" inside the transaction
/// (as a row the database refuses would).
private final class BatchGate: PublishObserver {
    struct Poison: Error {}
    let notifier = Mutex<Notifier?>(nil)
    /// The size of each batch the gate was shown, in order.
    let batchCalls = Mutex<[Int]>([])
    let waiting: Int
    let entered: AsyncStream<Void>
    private let enteredContinuation: AsyncStream<Void>.Continuation

    init(waiting: Int) {
        self.waiting = waiting
        (entered, enteredContinuation) = AsyncStream.makeStream()
    }

    func didStore(_ publishes: [StoredPublish], on db: any SQLDatabase) async throws {
        batchCalls.withLock { $0.append(publishes.count) }
        for publish in publishes { try await didStore(publish.rows, draft: publish.draft, preferences: publish.preferences, on: db) }
    }

    func didStore(_ rows: [StoredNotification], draft: NotificationDraft, preferences: [String: NotificationPreferences], on db: any SQLDatabase)
        async throws
    {
        if draft.title.hasPrefix("poison") { throw Poison() }
        guard draft.title == "first", let notifier = notifier.withLock({ $0 }) else { return }
        enteredContinuation.yield()
        let waiting = self.waiting
        try await withDeadline(.seconds(20)) { await notifier.waitUntilPending(waiting) }
    }
}

/// What one publish of the test returned.
private struct Outcome: Sendable {
    let title: String
    let stored: [StoredNotification]?
    var refused: Set<String>? = nil
}

/// Publishes "first" to `owner`, and once it is inside its transaction, `titles` concurrently
/// (each to the users `recipients` gives), so all of those wait for one batch.
private func publishBehindFirst(
    _ components: CairnComponents, gate: BatchGate, owner: Member, titles: [String], checkingMembership: Bool = false,
    recipients: @escaping @Sendable (Int) -> [String]
) async throws -> (first: [StoredNotification], rest: [Outcome]) {
    let notifier = components.notifications
    gate.notifier.withLock { $0 = notifier }
    return try await withThrowingTaskGroup(of: Outcome.self) { group in
        group.addTask {
            Outcome(
                title: "first",
                stored: try await notifier.publish(NotificationDraft(type: "message", title: "first"), to: [owner.userId], tenantId: owner.tenantId))
        }
        var entered = gate.entered.makeAsyncIterator()
        _ = await entered.next()
        for (index, title) in titles.enumerated() {
            group.addTask {
                do {
                    let stored = try await notifier.publish(
                        NotificationDraft(type: "message", title: title), to: recipients(index), tenantId: owner.tenantId,
                        checkingMembership: checkingMembership)
                    return Outcome(title: title, stored: stored)
                } catch let error as NotTenantMembers {
                    return Outcome(title: title, stored: nil, refused: error.userIds)
                } catch {
                    return Outcome(title: title, stored: nil)
                }
            }
        }
        var first: [StoredNotification] = []
        var rest: [Outcome] = []
        for try await outcome in group {
            if outcome.title == "first" { first = outcome.stored ?? [] } else { rest.append(outcome) }
        }
        return (first, rest)
    }
}

@Suite("Notifications: publishes stored in batches")
struct PublishBatchTests {
    @Test(arguments: TestEngine.available)
    func concurrentPublishesShareOneTransactionWithPerUserSeqsAndDelivery(engine: TestEngine) async throws {
        let titles = (1...30).map { "batched \($0)" }
        let gate = BatchGate(waiting: titles.count)
        try await withTestApp(
            engine,
            configure: {
                $0.outbound.allowPrivateWebhookTargets = true; $0.notifications.publishBatchesInFlight = 1
            }, observers: [gate]
        ) { app in
            let components = app.components
            let owner = try await signUp(app.client, "batch@example.com")
            let member = try await addMember(app.client, owner: owner, email: "batch-member@example.com")
            // The outbound channels plan a webhook delivery per row, in the batch's transaction.
            let hook = try await app.client.json(.post, "/webhooks", ["url": "http://127.0.0.1:9/hook", "types": ["message"]], token: owner.token)
            try #require(hook.status == .created, "\(hook.text)")
            // Every announced id, heard as the node's hub hears them (after the commit).
            let (listening, listeningContinuation) = AsyncStream<Void>.makeStream()
            let announcements = components.events.subscribe(channel: "cairn_notifications") { listeningContinuation.yield() }
            var listened = listening.makeAsyncIterator()
            _ = await listened.next()
            let announced = Task {
                var ids: Set<String> = []
                for await payload in announcements {
                    ids.formUnion(payload.split(separator: ",").map(String.init))
                    if ids.count == 1 + 30 + 10 { break }
                }
                return ids
            }
            let before = components.notifications.publishTransactions
            // Publishes alternate between the two users; every third goes to both.
            let (first, rest) = try await publishBehindFirst(components, gate: gate, owner: owner, titles: titles) { index in
                index % 3 == 2 ? [owner.userId, member.userId] : [index % 2 == 0 ? owner.userId : member.userId]
            }
            // "first" alone, then everything that waited behind it in one transaction.
            #expect(components.notifications.publishTransactions - before == 2)
            #expect(first.map(\.seq) == [1])
            #expect(rest.allSatisfy { $0.stored != nil })
            let returned = first + rest.flatMap { $0.stored ?? [] }
            for user in [owner, member] {
                let stored = try await components.notifications.store.after(seq: 0, tenantId: owner.tenantId, userId: user.userId, limit: 100)
                #expect(stored.map(\.seq) == Array(1...Int64(stored.count)))
                #expect(Set(stored.map(\.id)) == Set(returned.filter { $0.userId == user.userId }.map(\.id)))
                // Seqs follow the order the publishes joined the batch in.
                let mine = returned.filter { $0.userId == user.userId }.sorted { $0.seq < $1.seq }
                #expect(mine.map(\.seq) == stored.map(\.seq))
                #expect(mine.map(\.title) == stored.map(\.title))
                #expect(try await components.notifications.store.currentSeq(tenantId: owner.tenantId, userId: user.userId) == Int64(stored.count))
            }
            #expect(returned.count == 1 + 30 + 10)
            let heard = try await withDeadline(.seconds(20)) { await announced.value }
            #expect(heard == Set(returned.map(\.id)))
            let planned = try await components.database.read { db in
                try await db.raw("SELECT notification_id FROM notification_deliveries WHERE channel = 'webhook'").all()
                    .map { try $0.decode(column: "notification_id", as: String.self) }
            }
            #expect(planned.count == returned.count)
            #expect(Set(planned) == Set(returned.map(\.id)))
            // "first" was a batch of one; the 30 behind it were shown to the observers in one call.
            #expect(gate.batchCalls.withLock { $0 } == [1, 30])
        }
    }

    @Test(arguments: TestEngine.available)
    func aFailingPublishFailsAloneAndTheRestOfItsBatchIsStored(engine: TestEngine) async throws {
        let titles = (1...12).map { $0 % 4 == 0 ? "poison \($0)" : "kept \($0)" }
        let gate = BatchGate(waiting: titles.count)
        try await withTestApp(engine, configure: { $0.notifications.publishBatchesInFlight = 1 }, observers: [gate]) { app in
            let components = app.components
            let owner = try await signUp(app.client, "poison@example.com")
            let before = components.notifications.publishTransactions
            let (first, rest) = try await publishBehindFirst(components, gate: gate, owner: owner, titles: titles) { _ in [owner.userId] }
            // The batch rolled back whole, then each of its publishes ran alone.
            #expect(components.notifications.publishTransactions - before == 2 + titles.count)
            #expect(first.map(\.seq) == [1])
            for outcome in rest { #expect((outcome.stored == nil) == outcome.title.hasPrefix("poison"), "\(outcome.title)") }
            let stored = try await components.notifications.store.after(seq: 0, tenantId: owner.tenantId, userId: owner.userId, limit: 100)
            // No seq lost to the failed ones, none taken twice.
            #expect(stored.map(\.seq) == Array(1...Int64(1 + 9)))
            #expect(Set(stored.map(\.title)) == Set(["first"] + titles.filter { !$0.hasPrefix("poison") }))
            #expect(Set(stored.map(\.id)) == Set((first + rest.flatMap { $0.stored ?? [] }).map(\.id)))
        }
    }

    /// A publisher's recipients are checked in the batch's one read: a publish naming another
    /// tenant's user or no user at all is refused alone, nothing of it stored, and the others
    /// of its batch are stored together (no rollback, no retries one by one).
    @Test(arguments: TestEngine.available)
    func membershipIsCheckedOnceForABatchAndRefusesOnlyTheOutsidersPublishes(engine: TestEngine) async throws {
        let titles = (1...12).map { "checked \($0)" }
        let gate = BatchGate(waiting: titles.count)
        try await withTestApp(engine, configure: { $0.notifications.publishBatchesInFlight = 1 }, observers: [gate]) { app in
            let components = app.components
            let owner = try await signUp(app.client, "checked@example.com")
            let stranger = try await signUp(app.client, "stranger@example.com")
            let nobody = UUIDv7.make()
            let before = components.notifications.publishTransactions
            let (first, rest) = try await publishBehindFirst(components, gate: gate, owner: owner, titles: titles, checkingMembership: true) {
                index in
                switch index % 4 {
                case 1: [owner.userId, stranger.userId]
                case 3: [nobody]
                default: [owner.userId]
                }
            }
            #expect(first.map(\.seq) == [1])
            for (index, title) in titles.enumerated() {
                let outcome = try #require(rest.first { $0.title == title })
                switch index % 4 {
                case 1: #expect(outcome.stored == nil && outcome.refused == [stranger.userId], "\(title)")
                case 3: #expect(outcome.stored == nil && outcome.refused == [nobody], "\(title)")
                default: #expect(outcome.stored?.count == 1, "\(title)")
                }
            }
            // "first" alone, then the six members' publishes in one transaction.
            #expect(components.notifications.publishTransactions - before == 2)
            #expect(gate.batchCalls.withLock { $0 } == [1, 6])
            let stored = try await components.notifications.store.after(seq: 0, tenantId: owner.tenantId, userId: owner.userId, limit: 100)
            #expect(stored.map(\.seq) == Array(1...7))
            let strangers = try await components.notifications.store.after(seq: 0, tenantId: stranger.tenantId, userId: stranger.userId, limit: 100)
            #expect(strangers.isEmpty)
        }
    }

    @Test(arguments: TestEngine.available)
    func batchingOffStoresEachPublishAlone(engine: TestEngine) async throws {
        try await withTestApp(engine, configure: { $0.notifications.publishBatchRows = 0 }) { app in
            let owner = try await signUp(app.client, "alone@example.com")
            let notifier = app.components.notifications
            let before = notifier.publishTransactions
            try await withThrowingTaskGroup(of: Void.self) { group in
                for n in 1...10 {
                    group.addTask {
                        try await notifier.publish(NotificationDraft(type: "message", title: "n\(n)"), to: [owner.userId], tenantId: owner.tenantId)
                    }
                }
                try await group.waitForAll()
            }
            #expect(notifier.publishTransactions - before == 10)
            let stored = try await notifier.store.after(seq: 0, tenantId: owner.tenantId, userId: owner.userId, limit: 100)
            #expect(stored.map(\.seq) == Array(1...10))
        }
    }
}
