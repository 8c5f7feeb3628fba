import CairnHTTP
import CairnStorage
import CairnTestSupport
import Foundation
import SQLKit
import Testing

@testable import CairnNotifications

@Suite("NotificationStore and PreferenceStore on both engines")
struct NotificationStoreTests {
    /// Recipients are user ids; the store does not look them up, so plain ids will do.
    let alice = UUIDv7.make()
    let bob = UUIDv7.make()
    let carol = UUIDv7.make()

    // MARK: Inbox

    @Test(arguments: TestEngine.available)
    func eachUserNumbersTheirNotificationsFromOne(engine: TestEngine) async throws {
        try await withStore(engine, NotificationStore.init) { store, tenant, other, database in
            let both = try await Factory.notifications(
                on: database, tenant: tenant, users: [alice, bob], type: "friend_request", title: "Hi", body: "Body",
                data: .object(["from": .string("carol")]), now: 1_000)
            #expect(both.map(\.userId) == [alice, bob])
            #expect(both.map(\.seq) == [1, 1])
            let second = try await Factory.notification(on: database, tenant: tenant, user: alice)
            #expect(second.seq == 2)
            // The same user id in another tenant has a counter of its own.
            #expect(try await Factory.notification(on: database, tenant: other, user: alice).seq == 1)

            #expect(try await store.currentSeq(tenantId: tenant.id, userId: alice) == 2)
            #expect(try await store.currentSeq(tenantId: tenant.id, userId: bob) == 1)
            #expect(try await store.currentSeq(tenantId: tenant.id, userId: carol) == 0)
            let stored = try #require(try await store.notification(id: both[1].id, tenantId: tenant.id, userId: bob))
            #expect(stored == both[1])
            #expect(stored.type == "friend_request")
            #expect(stored.data == #"{"from":"carol"}"#)
            #expect(stored.createdAt == 1_000)
            #expect(stored.readAt == nil)
        }
    }

    @Test(arguments: TestEngine.available)
    func concurrentPublishersGiveEachUserGaplessIncreasingNumbers(engine: TestEngine) async throws {
        try await withStore(engine, NotificationStore.init) { store, tenant, _, database in
            let (alice, bob) = (self.alice, self.bob)
            try await withThrowingTaskGroup(of: Void.self) { group in
                for index in 0..<24 {
                    group.addTask {
                        _ = try await Factory.notifications(on: database, tenant: tenant, users: [alice, bob], title: "N\(index)")
                    }
                }
                try await group.waitForAll()
            }
            for user in [alice, bob] {
                let all = try await store.after(seq: 0, tenantId: tenant.id, userId: user, limit: 100)
                #expect(all.map(\.seq) == Array(1...24))
                #expect(try await store.currentSeq(tenantId: tenant.id, userId: user) == 24)
            }
        }
    }

    @Test(arguments: TestEngine.available)
    func aDedupeKeyDeliversOncePerUserWithoutLeavingAGap(engine: TestEngine) async throws {
        try await withStore(engine, NotificationStore.init) { store, tenant, other, database in
            let first = try await Factory.notification(on: database, tenant: tenant, user: alice, dedupeKey: "job-1-done")
            #expect(first.seq == 1)

            let again = try await Factory.notifications(on: database, tenant: tenant, users: [alice, bob], dedupeKey: "job-1-done")
            #expect(again.map(\.userId) == [bob])
            #expect(try await store.after(seq: 0, tenantId: tenant.id, userId: alice, limit: 10).map(\.id) == [first.id])
            // Alice's skipped number was given back: her next notification is 2, not 3.
            #expect(try await store.currentSeq(tenantId: tenant.id, userId: alice) == 1)
            #expect(try await Factory.notification(on: database, tenant: tenant, user: alice).seq == 2)

            #expect(try await store.count(dedupeKey: "job-1-done", tenantId: tenant.id, userIds: [alice, bob, carol]) == 2)
            #expect(try await store.count(dedupeKey: "job-1-done", tenantId: tenant.id, userIds: []) == 0)
            #expect(try await store.count(dedupeKey: "job-1-done", tenantId: other.id, userIds: [alice]) == 0)
            #expect(try await Factory.notifications(on: database, tenant: other, users: [alice], dedupeKey: "job-1-done").count == 1)
            #expect(try await Factory.notifications(on: database, tenant: tenant, users: [alice], dedupeKey: "job-1-done").isEmpty)
        }
    }

    @Test(arguments: TestEngine.available)
    func catchUpReturnsAUsersNotificationsAfterASeqOldestFirst(engine: TestEngine) async throws {
        try await withStore(engine, NotificationStore.init) { store, tenant, other, database in
            var mine: [StoredNotification] = []
            for _ in 0..<5 {
                mine.append(try await Factory.notification(on: database, tenant: tenant, user: alice))
                _ = try await Factory.notification(on: database, tenant: tenant, user: bob)
                _ = try await Factory.notification(on: database, tenant: other, user: alice)
            }
            #expect(try await store.after(seq: 0, tenantId: tenant.id, userId: alice, limit: 2).map(\.id) == mine[0..<2].map(\.id))
            #expect(try await store.after(seq: 2, tenantId: tenant.id, userId: alice, limit: 10).map(\.id) == mine[2..<5].map(\.id))
            #expect(try await store.after(seq: 5, tenantId: tenant.id, userId: alice, limit: 10).isEmpty)
        }
    }

    @Test(arguments: TestEngine.available)
    func theInboxPagesNewestFirstAndFiltersUnreadAndType(engine: TestEngine) async throws {
        try await withStore(engine, NotificationStore.init) { store, tenant, other, database in
            var mine: [StoredNotification] = []
            for index in 0..<6 {
                mine.append(
                    try await Factory.notification(on: database, tenant: tenant, user: alice, type: index % 2 == 0 ? "message" : "system_alert"))
                _ = try await Factory.notification(on: database, tenant: tenant, user: bob)
                _ = try await Factory.notification(on: database, tenant: other, user: alice)
            }
            _ = try await store.markRead(id: mine[4].id, tenantId: tenant.id, userId: alice, now: 1)
            _ = try await store.markRead(id: mine[1].id, tenantId: tenant.id, userId: alice, now: 1)

            try await expectListing(limit: 4, mine.reversed().map(\.id), id: \.id) {
                try await store.list(tenantId: tenant.id, userId: alice, unreadOnly: false, type: nil, page: $0)
            }
            try await expectListing(limit: 2, [mine[5], mine[3], mine[2], mine[0]].map(\.id), id: \.id) {
                try await store.list(tenantId: tenant.id, userId: alice, unreadOnly: true, type: nil, page: $0)
            }
            try await expectListing(limit: 2, [mine[2], mine[0]].map(\.id), id: \.id) {
                try await store.list(tenantId: tenant.id, userId: alice, unreadOnly: true, type: "message", page: $0)
            }
            #expect(try await store.unreadCount(tenantId: tenant.id, userId: alice) == 4)
            #expect(try await store.unreadCount(tenantId: tenant.id, userId: carol) == 0)
        }
    }

    @Test(arguments: TestEngine.available)
    func onlyTheRecipientReadsMarksOrDeletesANotification(engine: TestEngine) async throws {
        try await withStore(engine, NotificationStore.init) { store, tenant, other, database in
            let note = try await Factory.notification(on: database, tenant: tenant, user: alice)

            #expect(try await store.notification(id: note.id, tenantId: tenant.id, userId: bob) == nil)
            #expect(try await store.notification(id: note.id, tenantId: other.id, userId: alice) == nil)
            #expect(try await store.notification(id: "not-a-uuid", tenantId: tenant.id, userId: alice) == nil)
            #expect(try await store.markRead(id: note.id, tenantId: tenant.id, userId: bob, now: 5) == nil)
            #expect(try await store.markRead(id: note.id, tenantId: other.id, userId: alice, now: 5) == nil)
            #expect(try await !store.delete(id: note.id, tenantId: tenant.id, userId: bob))
            #expect(try await !store.delete(id: note.id, tenantId: other.id, userId: alice))
            #expect(try await store.notification(id: note.id, tenantId: tenant.id, userId: alice) == note)

            // The first read time is kept.
            #expect(try await store.markRead(id: note.id, tenantId: tenant.id, userId: alice, now: 1_000)?.readAt == 1_000)
            #expect(try await store.markRead(id: note.id, tenantId: tenant.id, userId: alice, now: 2_000)?.readAt == 1_000)
            #expect(try await store.delete(id: note.id, tenantId: tenant.id, userId: alice))
            #expect(try await store.notification(id: note.id, tenantId: tenant.id, userId: alice) == nil)
            #expect(try await !store.delete(id: note.id, tenantId: tenant.id, userId: alice))
        }
    }

    @Test(arguments: TestEngine.available)
    func markAllReadStopsAtTheGivenSeqAndTouchesOnlyTheUser(engine: TestEngine) async throws {
        try await withStore(engine, NotificationStore.init) { store, tenant, _, database in
            var mine: [StoredNotification] = []
            for _ in 0..<4 {
                mine.append(try await Factory.notification(on: database, tenant: tenant, user: alice))
                _ = try await Factory.notification(on: database, tenant: tenant, user: bob)
            }
            _ = try await store.markRead(id: mine[0].id, tenantId: tenant.id, userId: alice, now: 10)
            #expect(try await store.markAllRead(tenantId: tenant.id, userId: alice, upToSeq: 2, now: 20) == 1)
            #expect(try await store.notification(id: mine[0].id, tenantId: tenant.id, userId: alice)?.readAt == 10)
            #expect(try await store.notification(id: mine[1].id, tenantId: tenant.id, userId: alice)?.readAt == 20)
            #expect(try await store.notification(id: mine[2].id, tenantId: tenant.id, userId: alice)?.readAt == nil)
            #expect(try await store.markAllRead(tenantId: tenant.id, userId: alice, upToSeq: nil, now: 30) == 2)
            #expect(try await store.markAllRead(tenantId: tenant.id, userId: alice, upToSeq: nil, now: 40) == 0)
            #expect(try await store.unreadCount(tenantId: tenant.id, userId: alice) == 0)
            #expect(try await store.unreadCount(tenantId: tenant.id, userId: bob) == 4)
        }
    }

    @Test(arguments: TestEngine.available)
    func pruningDeletesOnlyNotificationsReadBeforeTheCutoff(engine: TestEngine) async throws {
        try await withStore(engine, NotificationStore.init) { store, tenant, _, database in
            let oldRead = try await Factory.notification(on: database, tenant: tenant, user: alice)
            let newRead = try await Factory.notification(on: database, tenant: tenant, user: alice)
            let unread = try await Factory.notification(on: database, tenant: tenant, user: alice)
            _ = try await store.markRead(id: oldRead.id, tenantId: tenant.id, userId: alice, now: 1_000)
            _ = try await store.markRead(id: newRead.id, tenantId: tenant.id, userId: alice, now: 5_000)

            #expect(try await store.pruneRead(before: 5_000) == 1)
            #expect(try await store.notification(id: oldRead.id, tenantId: tenant.id, userId: alice) == nil)
            #expect(try await store.notification(id: newRead.id, tenantId: tenant.id, userId: alice) != nil)
            #expect(try await store.notification(id: unread.id, tenantId: tenant.id, userId: alice) != nil)

            for _ in 0..<3 {
                let note = try await Factory.notification(on: database, tenant: tenant, user: bob)
                _ = try await store.markRead(id: note.id, tenantId: tenant.id, userId: bob, now: 100)
            }
            #expect(try await store.pruneRead(before: 200, limit: 2) == 2)
            #expect(try await store.pruneRead(before: 200, limit: 2) == 1)
            // Pruning never renumbers: the next notification continues the sequence.
            #expect(try await Factory.notification(on: database, tenant: tenant, user: alice).seq == 4)
        }
    }

    @Test(arguments: TestEngine.available)
    func liveDeliveryReadsNotificationsByIdAcrossTenants(engine: TestEngine) async throws {
        try await withStoreDatabase(engine) { database in
            let store = NotificationStore(database: database)
            let a = try await Factory.notification(on: database, tenant: try await Factory.tenant(on: database), user: alice)
            let b = try await Factory.notification(on: database, tenant: try await Factory.tenant(on: database), user: bob)
            try await expectBulkRead(of: [a.id, b.id], id: \.id) { try await store.notifications(ids: $0) }
        }
    }

    // MARK: Preferences

    @Test(arguments: TestEngine.available)
    func preferencesAreTheDefaultsUntilSavedAndThenReplacedWhole(engine: TestEngine) async throws {
        try await withStore(engine, PreferenceStore.init) { store, tenant, other, database in
            #expect(try await store.preferences(tenantId: tenant.id, userId: alice) == .defaults)

            let quiet = NotificationPreferences.QuietHours(start: "22:00", end: "07:00", timeZone: "Europe/Paris")
            let first = NotificationPreferences(types: ["*": ["email": true], "message": ["push": false]], quietHours: quiet)
            _ = try await Factory.preferences(on: database, tenant: tenant, user: alice, first)
            #expect(try await store.preferences(tenantId: tenant.id, userId: alice) == first)
            // Per user and per tenant.
            #expect(try await store.preferences(tenantId: tenant.id, userId: bob) == .defaults)
            #expect(try await store.preferences(tenantId: other.id, userId: alice) == .defaults)

            let second = NotificationPreferences(types: ["message": ["webhook": false]], quietHours: nil)
            _ = try await Factory.preferences(on: database, tenant: tenant, user: alice, second)
            #expect(try await store.preferences(tenantId: tenant.id, userId: alice) == second)
        }
    }

    @Test(arguments: TestEngine.available)
    func publishingReadsTheSavedPreferencesOfItsRecipients(engine: TestEngine) async throws {
        try await withStore(engine, PreferenceStore.init) { _, tenant, other, database in
            let saved = try await Factory.preferences(on: database, tenant: tenant, user: alice)
            _ = try await Factory.preferences(on: database, tenant: other, user: bob)
            let (alice, bob, carol) = (self.alice, self.bob, self.carol)
            let found = try await database.read { db in
                try await PreferenceStore.preferences(tenantId: tenant.id, userIds: [alice, bob, carol], on: db)
            }
            #expect(found == [alice: saved])
            let none = try await database.read { db in try await PreferenceStore.preferences(tenantId: tenant.id, userIds: [], on: db) }
            #expect(none.isEmpty)
        }
    }

    @Test(arguments: TestEngine.available)
    func unreadableStoredPreferencesReadAsTheDefaults(engine: TestEngine) async throws {
        try await withStore(engine, PreferenceStore.init) { store, tenant, _, database in
            _ = try await Factory.preferences(on: database, tenant: tenant, user: alice)
            try await database.write { db in
                try await db.raw("UPDATE notification_preferences SET prefs = 'not json' WHERE tenant_id = \(bind: tenant.id)").run()
            }
            #expect(try await store.preferences(tenantId: tenant.id, userId: alice) == .defaults)
        }
    }
}
