package import AsyncHTTPClient
import Foundation
import NIOCore
import NIOPosix
import NIOSSL
import Synchronization

/// Refuses webhook targets on loopback, link-local, private, shared or unspecified addresses
/// (SSRF), unless the operator allows them.
enum AddressPolicy {
    /// True when every address `host` resolves to is public.
    static func isPublic(host: String) async -> Bool {
        await publicAddress(host: host) != nil
    }

    /// The first address `host` resolves to (as text) when every one of them is public, else
    /// nil (also when it does not resolve). Connecting to this very address, rather than
    /// resolving again, is what makes the check hold (a name that resolves to a public address
    /// for the check and to a private one for the connection is DNS rebinding).
    static func publicAddress(host: String) async -> String? {
        let addresses: [SocketAddress]
        do {
            addresses = try await NIOThreadPool.singleton.runIfActive {
                try Self.resolve(bare(host))
            }
        } catch {
            return nil
        }
        guard !addresses.isEmpty, addresses.allSatisfy(isPublic) else { return nil }
        return addresses.first?.ipAddress
    }

    /// A URL host without the brackets of an IPv6 literal.
    static func bare(_ host: String) -> String {
        host.hasPrefix("[") && host.hasSuffix("]") ? String(host.dropFirst().dropLast()) : host
    }

    static func resolve(_ host: String) throws -> [SocketAddress] {
        var hints = addrinfo()
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        var result: UnsafeMutablePointer<addrinfo>?
        guard getaddrinfo(host, nil, &hints, &result) == 0, let first = result else { return [] }
        defer { freeaddrinfo(result) }
        var addresses: [SocketAddress] = []
        var cursor: UnsafeMutablePointer<addrinfo>? = first
        while let info = cursor {
            if let address = info.pointee.ai_addr {
                if info.pointee.ai_family == AF_INET {
                    address.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { addresses.append(SocketAddress($0.pointee, host: host)) }
                } else if info.pointee.ai_family == AF_INET6 {
                    address.withMemoryRebound(to: sockaddr_in6.self, capacity: 1) { addresses.append(SocketAddress($0.pointee, host: host)) }
                }
            }
            cursor = info.pointee.ai_next
        }
        return addresses
    }

    static func isPublic(_ address: SocketAddress) -> Bool {
        switch address {
        case .v4(let v4):
            let value = UInt32(bigEndian: v4.address.sin_addr.s_addr)
            let a = value >> 24
            let b = (value >> 16) & 0xFF
            if a == 0 || a == 10 || a == 127 { return false }  // unspecified, private, loopback
            if a == 169 && b == 254 { return false }  // link-local (cloud metadata)
            if a == 172 && (16...31).contains(b) { return false }
            if a == 192 && b == 168 { return false }
            if a == 100 && (64...127).contains(b) { return false }  // shared address space (RFC 6598)
            if a >= 224 { return false }  // multicast, reserved, broadcast
            return true
        case .v6(let v6):
            let bytes = withUnsafeBytes(of: v6.address.sin6_addr) { Array($0) }
            if bytes.allSatisfy({ $0 == 0 }) { return false }  // ::
            if bytes[0..<15].allSatisfy({ $0 == 0 }) && bytes[15] == 1 { return false }  // ::1
            if bytes[0] == 0xFE && (bytes[1] & 0xC0) == 0x80 { return false }  // fe80::/10
            if (bytes[0] & 0xFE) == 0xFC { return false }  // fc00::/7
            if bytes[0] == 0xFF { return false }  // multicast
            if bytes[0..<10].allSatisfy({ $0 == 0 }) && bytes[10] == 0xFF && bytes[11] == 0xFF {  // IPv4-mapped
                let v4 = UInt32(bytes[12]) << 24 | UInt32(bytes[13]) << 16 | UInt32(bytes[14]) << 8 | UInt32(bytes[15])
                var raw = sockaddr_in()
                raw.sin_family = sa_family_t(AF_INET)
                raw.sin_addr.s_addr = v4.bigEndian
                return isPublic(SocketAddress(raw, host: ""))
            }
            return true
        default:
            return false
        }
    }
}

/// HTTP clients that connect to one checked address of one host (DNS pinning; TLS still
/// verifies the certificate for the host name), kept for connection reuse and shut down
/// after five idle minutes or when more than 64 are open (the least recently used first).
final class PinnedClients: Sendable {
    static let capacity = 64
    static let idleTime: Duration = .seconds(300)

    private struct Entry {
        var client: HTTPClient
        var lastUsed: ContinuousClock.Instant
    }
    private let entries = Mutex<[String: Entry]>([:])

    /// The client whose connections to `host` go to `address`.
    func client(host: String, address: String) -> HTTPClient {
        let key = host + "|" + address
        let (client, retired) = entries.withLock { entries -> (HTTPClient, [HTTPClient]) in
            let now = ContinuousClock.now
            if var entry = entries[key] {
                entry.lastUsed = now
                entries[key] = entry
                return (entry.client, [])
            }
            var retired: [HTTPClient] = []
            for (key, entry) in entries where now - entry.lastUsed > Self.idleTime {
                retired.append(entry.client)
                entries[key] = nil
            }
            if entries.count >= Self.capacity, let oldest = entries.min(by: { $0.value.lastUsed < $1.value.lastUsed }) {
                retired.append(oldest.value.client)
                entries[oldest.key] = nil
            }
            var configuration = HTTPClient.Configuration()
            configuration.redirectConfiguration = .disallow
            configuration.timeout = .init(connect: .seconds(5), read: .seconds(10))
            configuration.dnsOverride = [host: address]
            let client = HTTPClient(eventLoopGroupProvider: .singleton, configuration: configuration)
            entries[key] = Entry(client: client, lastUsed: now)
            return (client, retired)
        }
        // A retired client may still carry a request: it is shut down after any timeout.
        for old in retired {
            Task {
                try? await Task.sleep(for: .seconds(30))
                try? await old.shutdown()
            }
        }
        return client
    }
}

/// The one way Cairn's outbound channels reach other servers over HTTP: tenants' webhook
/// targets through the address policy (SSRF, RFC 6890 special-purpose ranges refused) and
/// DNS-pinned clients, and the operator's email and push providers through clients that trust
/// the operator's extra certificate authorities. Redirects are never followed. Created once
/// by the composition root and injected, so tests can allow loopback targets.
package struct OutboundHTTP: Sendable {
    /// Whether targets on loopback, link-local and private addresses are allowed
    /// (`CAIRN_WEBHOOKS_ALLOW_PRIVATE`; tests and closed networks only).
    package let allowPrivateTargets: Bool

    // The clients live for the whole process, like `HTTPClient.shared`, which needs no
    // shutdown: a client released without `shutdown()` traps, and a node's components (and
    // the CLI's) are released at any time.
    private static let pinned = PinnedClients()
    private static let direct: HTTPClient = {
        var configuration = HTTPClient.Configuration()
        configuration.redirectConfiguration = .disallow
        configuration.timeout = .init(connect: .seconds(5), read: .seconds(10))
        return HTTPClient(eventLoopGroupProvider: .singleton, configuration: configuration)
    }()
    private static let providerClients = Mutex<[String: HTTPClient]>([:])

    /// Creates the policy; the clients are shared by the process.
    package init(allowPrivateTargets: Bool) {
        self.allowPrivateTargets = allowPrivateTargets
    }

    /// Whether `host` may be a webhook target: every address it resolves to is public, or
    /// private targets are allowed.
    package func isAllowedTarget(host: String) async -> Bool {
        if allowPrivateTargets { return true }
        return await AddressPolicy.isPublic(host: host)
    }

    /// The client for a request to a tenant-chosen `host`: with the address policy on, one
    /// pinned to the checked address (so DNS cannot swap in a private address between the
    /// check and the connection); nil when the host does not resolve to public addresses only.
    package func targetClient(host: String) async -> HTTPClient? {
        if allowPrivateTargets { return Self.direct }
        guard let address = await AddressPolicy.publicAddress(host: host) else { return nil }
        return Self.pinned.client(host: AddressPolicy.bare(host), address: address)
    }

    /// The client for the operator's providers, one per trust configuration. HTTP/2 is
    /// negotiated by ALPN where the server offers it, which APNs requires.
    package func providerClient(caFile: String?) -> HTTPClient {
        Self.providerClients.withLock { clients in
            if let client = clients[caFile ?? ""] { return client }
            var tls = TLSConfiguration.makeClientConfiguration()
            if let caFile { tls.additionalTrustRoots = [.file(caFile)] }
            var configuration = HTTPClient.Configuration(tlsConfiguration: tls)
            configuration.redirectConfiguration = .disallow
            configuration.httpVersion = .automatic
            configuration.timeout = .init(connect: .seconds(5), read: .seconds(10))
            let client = HTTPClient(eventLoopGroupProvider: .singleton, configuration: configuration)
            clients[caFile ?? ""] = client
            return client
        }
    }
}
