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
}
