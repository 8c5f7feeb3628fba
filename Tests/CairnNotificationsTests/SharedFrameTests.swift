import CairnServer
import CairnStorage
import CairnTestSupport
import Foundation
import NIOCore
import Testing

@testable import CairnNotifications

@Suite("Notifications: one message per notification, not per socket")
struct SharedFrameTests {
    /// A tenant broadcast reaches every socket of every member: encoding its message once per
    /// socket cost a user with ten sockets ten encodings and ten buffers. The hub encodes each
    /// live row once, and every connection of its recipient on the node gets that same row and
    /// buffer, which is the protocol's notification message.
    @Test(arguments: TestEngine.available)
    func aUsersConnectionsShareOneEncodedMessage(engine: TestEngine) async throws {
        try await withLiveOwner(engine, "shared-frame@example.com") { app, owner in
            let center = app.components.notifications
            let mailboxes = [Mailbox(capacity: 10), Mailbox(capacity: 10)]
            for mailbox in mailboxes { center.hub.register(mailbox, tenantId: owner.tenantId, userId: owner.userId, transport: .websocket) }
            defer {
                for mailbox in mailboxes { center.hub.unregister(mailbox, tenantId: owner.tenantId, userId: owner.userId, transport: .websocket) }
            }
            // An announcement before the node listens is lost (connections re-read then): publish once it does.
            try await withDeadline(.seconds(30), "the hub listening") {
                while await !mailboxes[0].next().resync {}
            }
            try await center.publish(NotificationDraft(type: "message", title: "shared"), to: [owner.userId], tenantId: owner.tenantId)
            var received: [LiveRow] = []
            for mailbox in mailboxes {
                let row = try await withDeadline(.seconds(30), "the live row in each mailbox") { () -> LiveRow in
                    while true {
                        // Ticks and resyncs may come first.
                        if let row = await mailbox.next().rows.first { return row }
                    }
                }
                received.append(row)
            }
            #expect(received[0] === received[1])
            let message = try JSONSerialization.jsonObject(with: Data(String(buffer: received[0].webSocketMessage).utf8)) as? [String: Any]
            #expect(message?["type"] as? String == "notification")
            #expect(message?["seq"] as? Int == 1)
            #expect((message?["notification"] as? [String: Any])?["title"] as? String == "shared")
        }
    }

    /// The hub writes a live row to a caught-up socket itself instead of waking the socket's
    /// task (10,000 task switches per tenant broadcast were most of its p99): two publishes
    /// reach the socket's writer in seq order while its consumer sleeps, and its next wake
    /// carries both as sent.
    @Test(arguments: TestEngine.available)
    func theHubWritesToACaughtUpSocketWithoutWakingIt(engine: TestEngine) async throws {
        try await withLiveOwner(engine, "direct-write@example.com") { app, owner in
            let center = app.components.notifications
            let mailbox = Mailbox(capacity: 10)
            let recorder = DirectRecorder()
            center.hub.register(mailbox, tenantId: owner.tenantId, userId: owner.userId, transport: .websocket)
            defer { center.hub.unregister(mailbox, tenantId: owner.tenantId, userId: owner.userId, transport: .websocket) }
            // Announcements made before the node listens are lost (connections re-read their
            // inbox then, which this mailbox does not): publish once it says it listens. It also
            // re-checks every connection's session once it listens for session changes, and
            // that pending check holds direct writes: taken here too before they are armed.
            try await withDeadline(.seconds(30), "the hub listening") {
                var (resync, authCheck) = (false, false)
                while !(resync && authCheck) {
                    let batch = await mailbox.next()
                    (resync, authCheck) = (resync || batch.resync, authCheck || batch.authCheck)
                }
            }
            mailbox.nextCheck(at: .now + .seconds(600))
            mailbox.armDirect(after: 0, room: 10, ackTimeout: .seconds(600), writer: recorder.writer)
            for title in ["one", "two"] {
                try await center.publish(NotificationDraft(type: "message", title: title), to: [owner.userId], tenantId: owner.tenantId)
            }
            let written = try await withDeadline(.seconds(30), "both rows written by the hub") { () -> [Int64] in
                var written: [Int64] = []
                for await seq in recorder.writes {
                    written.append(seq)
                    if written.count == 2 { break }
                }
                return written
            }
            #expect(written == [1, 2])
            mailbox.push(client: .ping)
            #expect(await mailbox.next().sent.map(\.seq) == [1, 2])
        }
    }
}
