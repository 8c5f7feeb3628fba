package import AsyncHTTPClient
import CairnStorage
import Foundation
import NIOCore
import NIOHTTP1
import NIOPosix
import NIOSSL
import Synchronization
import Tracing

/// Refuses webhook and provider targets on any address that is not globally reachable unicast
/// (SSRF): loopback, private, link-local, shared, NAT64, documentation, benchmarking and every
/// other special-purpose range, unless the operator allows them.
enum AddressPolicy {
    /// What the policy makes of a target host.
    enum Verdict: Sendable, Equatable {
        /// Every address the host resolves to is public.
        case allowed
        /// The host resolves to no address (unknown name, or DNS unreachable).
        case unresolved
        /// The host resolves to a loopback, private or other non-public address.
        case notPublic
    }

    /// What the policy makes of `host`, resolved once.
    static func verdict(host: String) async -> Verdict {
        let addresses = (try? await NIOThreadPool.singleton.runIfActive { try Self.resolve(bare(host)) }) ?? []
        if addresses.isEmpty { return .unresolved }
        return addresses.allSatisfy(isPublic) ? .allowed : .notPublic
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

    /// True when `address` is globally reachable unicast: not in the IANA IPv4 or IPv6
    /// Special-Purpose Address Registries (RFC 6890 and its updates), not multicast or reserved,
    /// and for IPv6 inside global unicast `2000::/3` (RFC 4291 §2.4). An IPv4-mapped IPv6 address
    /// is judged by its IPv4 address.
    static func isPublic(_ address: SocketAddress) -> Bool {
        switch address {
        case .v4(let v4):
            return isPublicV4(UInt32(bigEndian: v4.address.sin_addr.s_addr))
        case .v6(let v6):
            let bytes = withUnsafeBytes(of: v6.address.sin6_addr) { Array($0) }
            if bytes[0..<10].allSatisfy({ $0 == 0 }) && bytes[10] == 0xFF && bytes[11] == 0xFF {  // ::ffff:0:0/96
                return isPublicV4(UInt32(bytes[12]) << 24 | UInt32(bytes[13]) << 16 | UInt32(bytes[14]) << 8 | UInt32(bytes[15]))
            }
            guard bytes[0] & 0xE0 == 0x20 else { return false }  // outside 2000::/3: ::/8, fc00::/7, fe80::/10, fec0::/10, ff00::/8…
            return !refusedV6.contains { matches(bytes, prefix: $0.prefix, length: $0.length) }
        default:
            return false
        }
    }

    /// IPv4 ranges no webhook may reach: the special-purpose registry's entries, multicast and
    /// the reserved class E (RFC 1112 §4), as (network, prefix length).
    static let refusedV4: [(network: UInt32, length: Int)] = [
        (0x0000_0000, 8),  // 0.0.0.0/8 "this network" (RFC 791)
        (0x0A00_0000, 8),  // 10.0.0.0/8 private (RFC 1918)
        (0x6440_0000, 10),  // 100.64.0.0/10 shared address space (RFC 6598)
        (0x7F00_0000, 8),  // 127.0.0.0/8 loopback (RFC 1122)
        (0xA9FE_0000, 16),  // 169.254.0.0/16 link-local, cloud metadata (RFC 3927)
        (0xAC10_0000, 12),  // 172.16.0.0/12 private (RFC 1918)
        (0xC000_0000, 24),  // 192.0.0.0/24 IETF protocol assignments (RFC 6890)
        (0xC000_0200, 24),  // 192.0.2.0/24 TEST-NET-1 (RFC 5737)
        (0xC01F_C400, 24),  // 192.31.196.0/24 AS112-v4 (RFC 7535)
        (0xC034_C100, 24),  // 192.52.193.0/24 AMT (RFC 7450)
        (0xC058_6300, 24),  // 192.88.99.0/24 6to4 relay anycast (RFC 7526)
        (0xC0A8_0000, 16),  // 192.168.0.0/16 private (RFC 1918)
        (0xC0AF_3000, 24),  // 192.175.48.0/24 AS112 direct delegation (RFC 7534)
        (0xC612_0000, 15),  // 198.18.0.0/15 benchmarking (RFC 2544)
        (0xC633_6400, 24),  // 198.51.100.0/24 TEST-NET-2 (RFC 5737)
        (0xCB00_7100, 24),  // 203.0.113.0/24 TEST-NET-3 (RFC 5737)
        (0xE000_0000, 4),  // 224.0.0.0/4 multicast (RFC 5771)
        (0xF000_0000, 4),  // 240.0.0.0/4 reserved, and 255.255.255.255 broadcast (RFC 1112, RFC 919)
    ]

    /// IPv6 ranges inside `2000::/3` from the special-purpose registry. The rest of it lies
    /// outside `2000::/3` and is refused by that test: NAT64 `64:ff9b::/96` (RFC 6052, which
    /// reaches any IPv4 address, private ones included, through the operator's translator) and
    /// its local-use `64:ff9b:1::/48` (RFC 8215), discard-only `100::/64` (RFC 6666), SRv6
    /// `5f00::/16` (RFC 9602), unique local, link-local, site-local and multicast.
    static let refusedV6: [(prefix: [UInt8], length: Int)] = [
        ([0x20, 0x01, 0x00, 0x00], 23),  // 2001::/23 IETF protocol assignments: Teredo, benchmarking, ORCHID (RFC 2928)
        ([0x20, 0x01, 0x0D, 0xB8], 32),  // 2001:db8::/32 documentation (RFC 3849)
        ([0x20, 0x02], 16),  // 2002::/16 6to4, which embeds any IPv4 address (RFC 3056)
        ([0x26, 0x20, 0x00, 0x4F, 0x80, 0x00], 48),  // 2620:4f:8000::/48 AS112 direct delegation (RFC 7534)
        ([0x3F, 0xFF, 0x00], 20),  // 3fff::/20 documentation (RFC 9637)
    ]

    /// True when the IPv4 address (host byte order) is in none of `refusedV4`.
    static func isPublicV4(_ value: UInt32) -> Bool {
        !refusedV4.contains { value >> (32 - $0.length) == $0.network >> (32 - $0.length) }
    }

    /// Whether the first `length` bits of `bytes` equal those of `prefix` (which holds at least
    /// `length` bits).
    static func matches(_ bytes: [UInt8], prefix: [UInt8], length: Int) -> Bool {
        for bit in stride(from: 0, to: length, by: 8) {
            let mask: UInt8 = length - bit >= 8 ? 0xFF : ~(0xFF >> UInt8(length - bit))
            if bytes[bit / 8] & mask != prefix[bit / 8] & mask { return false }
        }
        return true
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
            configuration.tracing = OutboundHTTP.untraced
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
        configuration.tracing = OutboundHTTP.untraced
        configuration.timeout = .init(connect: .seconds(5), read: .seconds(10))
        return HTTPClient(eventLoopGroupProvider: .singleton, configuration: configuration)
    }()
    private static let providerClients = Mutex<[String: HTTPClient]>([:])

    /// Creates the policy; the clients are shared by the process.
    package init(allowPrivateTargets: Bool) {
        self.allowPrivateTargets = allowPrivateTargets
    }

    /// Why a host may not be a webhook target.
    package enum TargetRefusal: Sendable, Equatable {
        /// The host resolves to no address.
        case unresolved
        /// The host resolves to a loopback, private or other non-public address.
        case notPublic
    }

    /// Why `host` may not be a webhook target, or nil when it may: every address it resolves
    /// to is public, or private targets are allowed.
    package func targetRefusal(host: String) async -> TargetRefusal? {
        if allowPrivateTargets { return nil }
        switch await AddressPolicy.verdict(host: host) {
        case .allowed: return nil
        case .unresolved: return .unresolved
        case .notPublic: return .notPublic
        }
    }

    /// The client for a request to a tenant-chosen `host`: with the address policy on, one
    /// pinned to the checked address (so DNS cannot swap in a private address between the
    /// check and the connection); nil when the host does not resolve to public addresses only.
    package func targetClient(host: String) async -> HTTPClient? {
        if allowPrivateTargets { return Self.direct }
        guard let address = await AddressPolicy.publicAddress(host: host) else { return nil }
        return Self.pinned.client(host: AddressPolicy.bare(host), address: address)
    }

    /// AsyncHTTPClient's own tracing turned off: its spans record the full URL and query, where
    /// a webhook target's or provider's credential may sit. ``execute(_:on:timeout:operation:attributes:)``
    /// makes the span and sends `traceparent` instead.
    static var untraced: HTTPClient.TracingConfiguration {
        var tracing = HTTPClient.TracingConfiguration()
        tracing.tracer = nil
        return tracing
    }

    /// Sends `request` on `client` within `timeout`, inside a client span named `operation`
    /// (`webhook delivery`, `provider delivery`) that carries the OpenTelemetry HTTP client
    /// attributes (method, `server.address`, `server.port`, the status; never the URL's path or
    /// query, which may hold credentials), and with the span's W3C `traceparent` (and
    /// `tracestate`) headers added, so the receiver can continue the trace.
    /// - Throws: AsyncHTTPClient's errors (connection, timeout), recorded on the span.
    package static func execute(
        _ request: HTTPClientRequest, on client: HTTPClient, timeout: Duration, operation: String, attributes: [String: String] = [:]
    ) async throws -> HTTPClientResponse {
        try await TraceContext.withSpan(operation, ofKind: .client) { span in
            var request = request
            let url = URL(string: request.url)
            span.attributes["http.request.method"] = request.method.rawValue
            if let host = url?.host { span.attributes["server.address"] = host }
            if let port = url?.port ?? (url?.scheme == "https" ? 443 : url?.scheme == "http" ? 80 : nil) { span.attributes["server.port"] = port }
            for (key, value) in attributes { span.attributes[key] = value }
            for (name, value) in TraceContext.headers() { request.headers.replaceOrAdd(name: name, value: value) }
            let response = try await client.execute(request, timeout: .init(timeout))
            span.attributes["http.response.status_code"] = Int(response.status.code)
            if response.status.code >= 400 { span.setStatus(.init(code: .error)) }
            return response
        }
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
            configuration.tracing = OutboundHTTP.untraced
            configuration.httpVersion = .automatic
            configuration.timeout = .init(connect: .seconds(5), read: .seconds(10))
            let client = HTTPClient(eventLoopGroupProvider: .singleton, configuration: configuration)
            clients[caFile ?? ""] = client
            return client
        }
    }
}
