import CairnNotifications
import CairnServer
import CairnStorage
import CairnTestSupport
import HummingbirdWSClient
import Logging
import Synchronization
import Testing

@Suite("Notifications: live connection metrics")
struct LiveConnectionMetricsTests {
    /// `cairn_notifications_connections{transport="websocket"}` counts an open socket and drops
    /// when it closes. The gauge is process-wide (other tests open sockets too), so the test
    /// reads it while its own socket is surely open, then waits for it to fall below that.
    @Test(arguments: TestEngine.available)
    func websocketGaugeRisesWhileOpenAndFallsAfterClose(engine: TestEngine) async throws {
        try await withLiveOwner(engine, "gauge@example.com") { app, owner in
            let hub = app.components.notifications.hub
            let whileOpen = Mutex<Double?>(nil)
            _ = try await WebSocketClient.connect(url: "ws://127.0.0.1:\(app.port!)/ws", logger: testLogger) { inbound, outbound, _ in
                try await outbound.write(.text(#"{"type":"auth","token":"\#(owner.token)"}"#))
                try await outbound.write(.text(#"{"type":"subscribe"}"#))
                // The first answer comes after the hub registered this connection.
                for try await _ in inbound.messages(maxSize: 1 << 20) {
                    #expect(hub.connectionCount == 1)
                    whileOpen.withLock { $0 = metricValue("cairn_notifications_connections", ["transport": "websocket"]) }
                    return
                }
            }
            let open = try #require(whileOpen.withLock { $0 })
            #expect(open >= 1)
            // The server unregisters when it sees the close: wait for this node's count.
            try await withDeadline(.seconds(10), "the hub to drop the connection") {
                for await count in hub.connectionCounts() where count == 0 { return }
            }
            // The gauge is updated right after the hub's count; polled because other tests'
            // sockets may hold it up for a moment (there is no event for the process-wide value).
            try await pollUntil("the websocket gauge to fall", timeout: .seconds(20)) {
                (metricValue("cairn_notifications_connections", ["transport": "websocket"]) ?? .infinity) < open
            }
        }
    }
}
