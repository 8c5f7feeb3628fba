import CairnNotifications
import CairnServer
import CairnStorage
import CairnTestSupport
import Foundation
import HTTPTypes
import HummingbirdTesting
import SQLKit
import Synchronization
import Testing

/// Deletes `victim` (through `DELETE /users/{id}`, as the owner) just before the transaction
/// that stores a publisher's publish naming them opens (after its membership read when that is
/// a read of its own): the interleaving a deletion racing a publish can take.
private final class DeleteAfterCheck: PublishObserver {
    struct Target: Sendable {
        let client: any TestClientProtocol
        let owner: Member
        let victim: String
    }

    let target = Mutex<Target?>(nil)
    /// The status of each deletion made.
    let statuses = Mutex<[Int]>([])

    func didStore(_ rows: [StoredNotification], draft: NotificationDraft, preferences: [String: NotificationPreferences], on db: any SQLDatabase)
        async throws
    {}

    func willStoreCheckedPublish(to userIds: [String], tenantId: String) async {
        guard
            let target = target.withLock({ value in
                defer { value = nil }; return value
            }), userIds.contains(target.victim)
        else { return }
        let status = (try? await target.client.json(.delete, "/users/\(target.victim)", token: target.owner.token).status.code) ?? 0
        statuses.withLock { $0.append(status) }
    }
}

/// Rows of `table` for `userId`, read straight from the database.
private func rows(_ table: String, userId: String, _ components: CairnComponents) async throws -> Int {
    try await components.database.read { db in
        try await db.raw("SELECT COUNT(*) AS n FROM \(unsafeRaw: table) WHERE user_id = \(bind: userId)").first()?.decode(column: "n", as: Int.self)
            ?? 0
    }
}

@Suite("Notifications: a publish racing the deletion of a recipient")
struct PublishDeletionRaceTests {
    /// The trial's race, ordered, with each publish alone (`publishBatchRows` 0): the
    /// publisher's recipients are checked by a read of their own, the member is deleted
    /// (committed), then the publish is stored without them.
    @Test(arguments: TestEngine.available)
    func aRecipientDeletedAfterTheCheckGetsNoRowNorCounter(engine: TestEngine) async throws {
        let gate = DeleteAfterCheck()
        try await withTestApp(engine, configure: { $0.notifications.publishBatchRows = 0 }, observers: [gate]) { app in
            let components = app.components
            let owner = try await signUp(app.client, "race-owner@example.com")
            let member = try await addMember(app.client, owner: owner, email: "race-member@example.com")
            gate.target.withLock { $0 = .init(client: app.client, owner: owner, victim: member.userId) }
            let stored = try await components.notifications.publish(
                NotificationDraft(type: "message", title: "race"), to: [owner.userId, member.userId], tenantId: owner.tenantId,
                checkingMembership: true)
            #expect(gate.statuses.withLock { $0 } == [204])
            #expect(stored.map(\.userId) == [owner.userId])
            #expect(try await rows("notifications", userId: member.userId, components) == 0)
            #expect(try await rows("notification_counters", userId: member.userId, components) == 0)
            #expect(try await rows("notifications", userId: owner.userId, components) == 1)
        }
    }

    /// The same race, batched (`publishBatchRows` 500): the membership check is the batch's
    /// locked read of its recipients inside the transaction that stores them, so there is no
    /// window between check and store: the member deleted before that transaction makes the
    /// publish refused as a whole (``NotTenantMembers``), nothing stored for anyone.
    @Test(arguments: TestEngine.available)
    func aBatchedPublishChecksMembershipInItsTransaction(engine: TestEngine) async throws {
        let gate = DeleteAfterCheck()
        try await withTestApp(engine, configure: { $0.notifications.publishBatchRows = 500 }, observers: [gate]) { app in
            let components = app.components
            let owner = try await signUp(app.client, "race-owner@example.com")
            let member = try await addMember(app.client, owner: owner, email: "race-member@example.com")
            gate.target.withLock { $0 = .init(client: app.client, owner: owner, victim: member.userId) }
            await #expect(throws: NotTenantMembers.self) {
                try await components.notifications.publish(
                    NotificationDraft(type: "message", title: "race"), to: [owner.userId, member.userId], tenantId: owner.tenantId,
                    checkingMembership: true)
            }
            #expect(gate.statuses.withLock { $0 } == [204])
            for user in [owner.userId, member.userId] {
                #expect(try await rows("notifications", userId: user, components) == 0)
                #expect(try await rows("notification_counters", userId: user, components) == 0)
            }
        }
    }

    /// A publish the server vouches for (a broadcast's page of users, a job's creator) that
    /// names a user deleted since the list was read stores nothing for them.
    @Test(arguments: TestEngine.available)
    func aVouchedPublishToADeletedUserStoresNothingForThem(engine: TestEngine) async throws {
        try await withTestApp(engine) { app in
            let components = app.components
            let owner = try await signUp(app.client, "vouch-owner@example.com")
            let member = try await addMember(app.client, owner: owner, email: "vouch-member@example.com")
            let stranger = try await signUp(app.client, "vouch-stranger@example.com")
            #expect(try await app.client.json(.delete, "/users/\(member.userId)", token: owner.token).status == .noContent)
            // The stranger is a user, but of another tenant: no row in this tenant either.
            let stored = try await components.notifications.publish(
                NotificationDraft(type: "message", title: "stale list"), to: [owner.userId, member.userId, stranger.userId], tenantId: owner.tenantId)
            #expect(stored.map(\.userId) == [owner.userId])
            for user in [member.userId, stranger.userId] {
                #expect(try await rows("notifications", userId: user, components) == 0)
                #expect(try await rows("notification_counters", userId: user, components) == 0)
            }
        }
    }
}
