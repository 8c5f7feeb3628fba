import CairnHTTP
import CairnStorage
import CairnTestSupport
import Foundation
import SQLKit
import Synchronization
import Testing

@testable import CairnNotifications

/// ``PublishStore``: the one write path of every publish, called with batches directly.
@Suite("PublishStore on both engines")
struct PublishStoreTests {
    let alice = UUIDv7.make()
    let bob = UUIDv7.make()

    /// A batch where a dedupe-keyed publish sits between plain ones for the same user: the
    /// holder of the key is skipped, a second publish of the key in the batch is skipped, and
    /// the seqs of the rows stored stay gapless (the skipped ones are given back in the middle
    /// of the batch, not only at its end).
    @Test(arguments: TestEngine.available)
    func duplicatesInsideABatchGiveTheirSeqsBackWithoutGaps(engine: TestEngine) async throws {
        try await withStore(engine, NotificationStore.init) { store, tenant, _, database in
            let (alice, bob) = (self.alice, self.bob)
            // Alice already holds "weekly".
            _ = try await Factory.notification(on: database, tenant: tenant, user: alice, title: "held", dedupeKey: "weekly")
            func publish(_ title: String, _ users: [String], key: String? = nil) -> Publish {
                Publish(draft: NotificationDraft(type: "message", title: title, dedupeKey: key), tenantId: tenant.id, userIds: users, now: 2_000)
            }
            let batch = [
                publish("one", [alice, bob].sorted()), publish("weekly again", [alice, bob].sorted(), key: "weekly"),
                publish("two", [alice]), publish("weekly a third time", [bob], key: "weekly"), publish("three", [alice, bob].sorted()),
            ]
            let stored = try await database.transaction { db in try await PublishStore.store(batch, observers: [], on: db) }
            #expect(stored.map { $0.map(\.title) }.map(Set.init) == [["one"], ["weekly again"], ["two"], [], ["three"]])
            #expect(stored[1].map(\.userId) == [bob])
            let aliceRows = try await store.after(seq: 0, tenantId: tenant.id, userId: alice, limit: 10)
            #expect(aliceRows.map(\.title) == ["held", "one", "two", "three"])
            #expect(aliceRows.map(\.seq) == [1, 2, 3, 4])
            #expect(try await store.currentSeq(tenantId: tenant.id, userId: alice) == 4)
            let bobRows = try await store.after(seq: 0, tenantId: tenant.id, userId: bob, limit: 10)
            #expect(bobRows.map(\.title) == ["one", "weekly again", "three"])
            #expect(bobRows.map(\.seq) == [1, 2, 3])
            #expect(try await store.currentSeq(tenantId: tenant.id, userId: bob) == 3)
            // The next publish continues from there.
            #expect(try await Factory.notification(on: database, tenant: tenant, user: bob).seq == 4)
        }
    }

    /// Every publish of a batch reaches the observers in one call, with the recipients whose
    /// in-app preference is off under ids that have no inbox row.
    @Test(arguments: TestEngine.available)
    func observersSeeTheWholeBatchOnceWithOutOfInboxRecipients(engine: TestEngine) async throws {
        try await withStore(engine, NotificationStore.init) { store, tenant, _, database in
            let (alice, bob) = (self.alice, self.bob)
            try await PreferenceStore(database: database).save(
                NotificationPreferences(types: ["digest": ["in_app": false]], quietHours: nil), tenantId: tenant.id, userId: bob)
            let observer = RecordingObserver()
            let batch = [
                Publish(draft: NotificationDraft(type: "digest", title: "d"), tenantId: tenant.id, userIds: [alice, bob].sorted(), now: 1),
                Publish(draft: NotificationDraft(type: "message", title: "m"), tenantId: tenant.id, userIds: [bob], now: 1),
            ]
            let stored = try await database.transaction { db in try await PublishStore.store(batch, observers: [observer], on: db) }
            #expect(stored.map { $0.map(\.userId) } == [[alice], [bob]])
            let calls = observer.calls.withLock { $0 }
            #expect(calls.count == 1)
            let seen = try #require(calls.first)
            #expect(seen.map(\.draft.title) == ["d", "m"])
            #expect(Set(seen[0].rows.map(\.userId)) == [alice, bob])
            let bobsDigest = try #require(seen[0].rows.first { $0.userId == bob })
            #expect(bobsDigest.seq == 0)
            #expect(try await store.notification(id: bobsDigest.id, tenantId: tenant.id, userId: bob) == nil)
            #expect(seen[0].preferences.keys.sorted() == [bob])
        }
    }
}

/// Records each batch of publishes it is shown.
private final class RecordingObserver: PublishObserver {
    let calls = Mutex<[[StoredPublish]]>([])

    func didStore(_ publishes: [StoredPublish], on db: any SQLDatabase) async throws {
        calls.withLock { $0.append(publishes) }
    }

    func didStore(_ rows: [StoredNotification], draft: NotificationDraft, preferences: [String: NotificationPreferences], on db: any SQLDatabase)
        async throws
    {}
}
