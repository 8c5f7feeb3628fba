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

    /// Every range of the IANA special-purpose registries (and multicast, reserved, outside
    /// global unicast) is refused at its first and last address; the public neighbours on either
    /// side of a range are not, so a range that is too wide fails too.
    @Test(arguments: [
        ("0.0.0.0/8", "0.0.0.0", "0.255.255.255"), ("10.0.0.0/8", "10.0.0.0", "10.255.255.255"),
        ("100.64.0.0/10", "100.64.0.0", "100.127.255.255"), ("127.0.0.0/8", "127.0.0.0", "127.255.255.255"),
        ("169.254.0.0/16", "169.254.0.0", "169.254.255.255"), ("172.16.0.0/12", "172.16.0.0", "172.31.255.255"),
        ("192.0.0.0/24", "192.0.0.0", "192.0.0.255"), ("192.0.2.0/24", "192.0.2.0", "192.0.2.255"),
        ("192.31.196.0/24", "192.31.196.0", "192.31.196.255"), ("192.52.193.0/24", "192.52.193.0", "192.52.193.255"),
        ("192.88.99.0/24", "192.88.99.0", "192.88.99.255"), ("192.168.0.0/16", "192.168.0.0", "192.168.255.255"),
        ("192.175.48.0/24", "192.175.48.0", "192.175.48.255"), ("198.18.0.0/15", "198.18.0.0", "198.19.255.255"),
        ("198.51.100.0/24", "198.51.100.0", "198.51.100.255"), ("203.0.113.0/24", "203.0.113.0", "203.0.113.255"),
        ("224.0.0.0/4", "224.0.0.0", "239.255.255.255"), ("240.0.0.0/4", "240.0.0.0", "255.255.255.255"),
        ("::/128", "::", "::"), ("::1/128", "::1", "::1"), ("::ffff:0:0/96 of 10.0.0.1", "::ffff:10.0.0.1", "::ffff:10.0.0.1"),
        ("64:ff9b::/96", "64:ff9b::", "64:ff9b::ffff:ffff"), ("64:ff9b:1::/48", "64:ff9b:1::", "64:ff9b:1:ffff:ffff:ffff:ffff:ffff"),
        ("100::/64", "100::", "100::ffff:ffff:ffff:ffff"), ("2001::/23", "2001::", "2001:1ff:ffff:ffff:ffff:ffff:ffff:ffff"),
        ("2001:db8::/32", "2001:db8::", "2001:db8:ffff:ffff:ffff:ffff:ffff:ffff"),
        ("2002::/16", "2002::", "2002:ffff:ffff:ffff:ffff:ffff:ffff:ffff"),
        ("2620:4f:8000::/48", "2620:4f:8000::", "2620:4f:8000:ffff:ffff:ffff:ffff:ffff"),
        ("3fff::/20", "3fff::", "3fff:fff:ffff:ffff:ffff:ffff:ffff:ffff"), ("5f00::/16", "5f00::", "5f00:ffff:ffff:ffff:ffff:ffff:ffff:ffff"),
        ("fc00::/7", "fc00::", "fdff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"), ("fe80::/10", "fe80::", "febf:ffff:ffff:ffff:ffff:ffff:ffff:ffff"),
        ("fec0::/10", "fec0::", "feff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"), ("ff00::/8", "ff00::", "ff02::1"),
    ])
    func everySpecialPurposeRangeIsRefused(range: String, first: String, last: String) throws {
        for address in [first, last] {
            #expect(!AddressPolicy.isPublic(try SocketAddress(ipAddress: address, port: 443)), "\(address) in \(range)")
        }
    }

    @Test func theirPublicNeighboursAreAllowed() throws {
        let neighbours = [
            "1.0.0.0", "9.255.255.255", "11.0.0.0", "100.63.255.255", "100.128.0.0", "126.255.255.255", "128.0.0.0", "169.253.255.255",
            "169.255.0.0", "172.15.255.255", "172.32.0.0", "191.255.255.255", "192.0.1.0", "192.0.3.0", "192.31.195.255",
            "192.31.197.0", "192.52.192.255", "192.52.194.0", "192.88.98.255", "192.88.100.0", "192.167.255.255", "192.169.0.0",
            "192.175.47.255", "192.175.49.0", "198.17.255.255", "198.20.0.0", "198.51.99.255", "198.51.101.0", "203.0.112.255",
            "203.0.114.0", "223.255.255.255", "::ffff:8.8.8.8", "2000::", "2001:200::", "2001:db7:ffff::", "2001:db9::",
            "2001:4860:4860::8888", "2003::", "2620:4f:7fff:ffff::", "2620:4f:8001::", "3ffe:ffff::", "3fff:1000::",
        ]
        for address in neighbours {
            #expect(AddressPolicy.isPublic(try SocketAddress(ipAddress: address, port: 443)), "\(address)")
        }
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
