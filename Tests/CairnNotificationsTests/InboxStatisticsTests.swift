import CairnNotifications
import CairnServer
import CairnStorage
import CairnTestSupport
import Foundation
import SQLKit
import Testing

@Suite("Notifications: the inbox's planner statistics")
struct InboxStatisticsTests {
    /// A burst of keyed notifications to one user (what the job-status bridge stores, two per
    /// job) gets the inbox analyzed on PostgreSQL within seconds, not at autovacuum's next look
    /// a minute on: before it, the planner read every notification of the user for each dedupe
    /// check.
    @Test(.enabled(if: TestEngine.postgresBaseURL != nil))
    func aBurstOfStoredNotificationsGetsTheInboxAnalyzed() async throws {
        try await withOwner(.postgres, "inbox-statistics@example.com") { _, components, owner in
            let database = components.notifications.store.database
            @Sendable func analyzedRows() async throws -> Int {
                try await database.read { db in
                    try await db.raw("SELECT reltuples::bigint AS n FROM pg_class WHERE relname = 'notifications'").first()!.decode(
                        column: "n", as: Int.self)
                }
            }
            // Autovacuum kept off the table (it may come within seconds on a fresh database):
            // the analysis seen is the node's own.
            try await database.write { db in try await db.raw("ALTER TABLE notifications SET (autovacuum_enabled = false)").run() }
            #expect(try await analyzedRows() == -1)
            let drafts = (0..<1_000).map { n in
                (
                    draft: NotificationDraft(type: "job_status", title: "job \(n) succeeded", dedupeKey: "job:\(n):succeeded"),
                    userIds: [owner.userId], tenantId: owner.tenantId
                )
            }
            _ = try await components.notifications.publishAll(drafts)
            await components.notifications.inboxStatistics.settled()
            #expect(try await analyzedRows() >= 1_000)
        }
    }
}
