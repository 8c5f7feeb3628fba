import CairnJobs
import CairnNotifications
import CairnOutbound
import CairnServer
import CairnTestSupport
import Foundation
import HTTPTypes
import HummingbirdTesting
import ServiceLifecycle
import Synchronization
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// A webhook receiver on a loopback port that never answers the first request (a receiver
/// slower than the node's shutdown) and answers every later one 200 at once.
private final class StallingReceiver: Sendable {
    let port: Int
    private let listener: Int32
    /// Requests read in full so far.
    let requests = Observed(0)

    init() throws {
        let listener = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { pointer in
                bind(listener, pointer, length) == 0 && listen(listener, 8) == 0 && getsockname(listener, pointer, &length) == 0
            }
        }
        guard bound else {
            close(listener)
            throw POSIXError(.EADDRNOTAVAIL)
        }
        self.listener = listener
        port = Int(UInt16(bigEndian: address.sin_port))
        Thread { [self] in serve() }.start()
    }

    /// Accepts connections one at a time until ``stop()``.
    private func serve() {
        while true {
            let connection = accept(listener, nil, nil)
            guard connection >= 0 else { return }
            defer { close(connection) }
            guard readRequest(connection) else { continue }
            requests.update { $0 += 1 }
            let count = requests.value
            if count == 1 {
                // Held until the client gives up (its end of the connection).
                var byte: UInt8 = 0
                while recv(connection, &byte, 1, 0) > 0 {}
            } else {
                let answer = Array("HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".utf8)
                _ = answer.withUnsafeBytes { send(connection, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            }
        }
    }

    /// Reads one request's head and its `Content-Length` body; false when the connection ended first.
    private func readRequest(_ connection: Int32) -> Bool {
        var received: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 4096)
        while true {
            let text = String(decoding: received, as: UTF8.self)
            if let end = text.range(of: "\r\n\r\n") {
                let head = text[..<end.lowerBound].lowercased()
                let length = head.range(of: "content-length: ").map { Int(head[$0.upperBound...].prefix { $0.isNumber }) ?? 0 } ?? 0
                if text.utf8.distance(from: end.upperBound.samePosition(in: text.utf8)!, to: text.utf8.endIndex) >= length { return true }
            }
            let count = chunk.withUnsafeMutableBytes { recv(connection, $0.baseAddress, $0.count, 0) }
            guard count > 0 else { return false }
            received += chunk[0..<count]
        }
    }

    /// Stops accepting.
    func stop() {
        shutdown(listener, Int32(SHUT_RDWR))
        close(listener)
    }
}

@Suite("Webhooks at shutdown")
struct WebhookShutdownTests {
    /// A fresh-user trial: a webhook send cut by the node's shutdown was recorded as a failed
    /// attempt ("connection failed"), and that error stayed on the delivery once a later
    /// attempt sent it. A send cancelled by the shutdown is no attempt: the job goes back with
    /// the delivery untouched (pending, no attempt, no error), and the next node's send leaves
    /// it `sent` after one attempt, with no error.
    @Test(arguments: TestEngine.available)
    func aSendCutByShutdownIsHandedBackWithoutAnAttempt(engine: TestEngine) async throws {
        let receiver = try StallingReceiver()
        defer { receiver.stop() }
        try await withTestApp(
            engine, mode: .router,
            configure: {
                $0.outbound.allowPrivateWebhookTargets = true
                $0.jobs.shutdownGrace = .zero
            }, runServices: false
        ) { app in
            let (client, components) = (app.client, app.components)
            let owner = try await signUp(client, "hold-hooks@example.com")
            let member = try await addMember(client, owner: owner, email: "hold-hooks-m@example.com")
            let created = try await client.json(
                .post, "/webhooks", ["url": "http://127.0.0.1:\(receiver.port)/hook", "types": ["message"]], token: owner.token)
            try #require(created.status == .created, "\(created.text)")
            let published = try await components.notifications.publish(
                NotificationDraft(type: "message", title: "held"), to: [member.userId], tenantId: member.tenantId)
            let deliveries = "/notifications/\(try #require(published.first?.id))/deliveries"

            // A node's worker sends; its shutdown comes while the receiver holds the request.
            let first = ServiceGroup(services: [JobWorker(queue: components.jobs, logger: testLogger)], logger: testLogger)
            let firstRun = Task { try await first.run() }
            try await receiver.requests.wait("the first send") { $0 == 1 }
            await first.triggerGracefulShutdown()
            try await withDeadline(.seconds(60), "the first worker's shutdown") { try await firstRun.value }
            let handedBack = try #require(
                try await client.json(.get, deliveries, token: member.token).decode(PageBody<DeliveryBody>.self).items.first)
            #expect(handedBack.state == "pending")
            #expect(handedBack.attempts == 0)
            #expect(handedBack.lastError == nil)

            // Another node's worker takes the job back up and sends it.
            let second = ServiceGroup(services: [JobWorker(queue: components.jobs, logger: testLogger)], logger: testLogger)
            let secondRun = Task { try await second.run() }
            try await components.jobs.waitUntil("the delivery sent") {
                try await client.json(.get, deliveries, token: member.token).decode(PageBody<DeliveryBody>.self).items.first?.state == "sent"
            }
            await second.triggerGracefulShutdown()
            try await secondRun.value
            let sent = try #require(try await client.json(.get, deliveries, token: member.token).decode(PageBody<DeliveryBody>.self).items.first)
            #expect(sent.attempts == 1)
            #expect(sent.lastError == nil)
            #expect(receiver.requests.value == 2)
        }
    }
}
