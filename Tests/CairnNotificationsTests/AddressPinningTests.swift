import AsyncHTTPClient
import CairnTestSupport
import Foundation
import NIOCore
import NIOHTTP1
import Testing

@testable import CairnNotifications
@testable import CairnOutbound

@Suite("Notifications: webhook address checks and DNS pinning")
struct AddressPinningTests {
    /// Process-wide, as in the server: a pinned client released without shutdown traps.
    static let pinnedClients = PinnedClients()
    var pinned: PinnedClients { Self.pinnedClients }

    @Test func onlyHostsWhoseEveryAddressIsPublicGetAnAddress() async {
        for host in ["127.0.0.1", "localhost", "[::1]", "10.0.0.7", "169.254.169.254", "100.64.1.1", "[fe80::1]", "name.invalid"] {
            #expect(await AddressPolicy.publicAddress(host: host) == nil, "\(host)")
        }
        #expect(await AddressPolicy.publicAddress(host: "8.8.8.8") == "8.8.8.8")
        #expect(await AddressPolicy.publicAddress(host: "[2001:4860:4860::8888]") == "2001:4860:4860::8888")
    }

    /// The pinned client connects to the address it was given, never resolving the name again:
    /// a name with no DNS record at all still reaches the receiver on the pinned address.
    @Test func aPinnedClientConnectsToItsAddressWithoutResolvingTheName() async throws {
        let receiver = try await WebhookReceiver(failFirst: 0)
        defer { receiver.stop() }
        let client = pinned.client(host: "hooks.cairn-test.invalid", address: "127.0.0.1")
        #expect(pinned.client(host: "hooks.cairn-test.invalid", address: "127.0.0.1") === client, "reused for keep-alive")
        var request = HTTPClientRequest(url: "http://hooks.cairn-test.invalid:\(receiver.port)/hook")
        request.method = .POST
        request.body = .bytes(.init(string: #"{"pinned":true}"#))
        let response = try await client.execute(request, timeout: .seconds(10))
        #expect(response.status.code == 200)
        let requests = try await receiver.wait("the pinned request reaching the receiver") { !$0.isEmpty }
        #expect(requests.count == 1)
        #expect((requests.first?["body"] as? [String: Any])?["pinned"] as? Bool == true)

        // Without the pin, the same name does not resolve.
        let unpinned = pinned.client(host: "other.cairn-test.invalid", address: "127.0.0.1")
        await #expect(throws: (any Error).self) {
            _ = try await unpinned.execute(HTTPClientRequest(url: "http://hooks.cairn-test.invalid:\(receiver.port)/hook"), timeout: .seconds(10))
        }
    }
}
