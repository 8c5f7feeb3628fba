import Foundation
package import HTTPTypes
package import Hummingbird

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// An IP address block in CIDR notation (RFC 4632 for IPv4, RFC 4291 §2.3 for IPv6), such as
/// `10.0.0.0/8` or `2001:db8::/32`; a bare address is a block of one.
package struct CIDRBlock: Sendable, Equatable, CustomStringConvertible {
    /// The network address: 4 bytes for IPv4, 16 for IPv6.
    package let bytes: [UInt8]
    /// The prefix length in bits (0...32 or 0...128).
    package let prefix: Int

    /// Parses `address[/prefix]`; nil when the address or prefix is not valid.
    package init?(_ text: String) {
        let parts = text.trimmingCharacters(in: .whitespaces).split(separator: "/", omittingEmptySubsequences: false)
        guard parts.count <= 2, let bytes = IPAddress.bytes(of: String(parts[0])) else { return nil }
        let maximum = bytes.count * 8
        var prefix = maximum
        if parts.count == 2 {
            guard let value = Int(parts[1]), (0...maximum).contains(value), parts[1].allSatisfy(\.isASCII) else { return nil }
            prefix = value
        }
        self.bytes = bytes
        self.prefix = prefix
    }

    /// True when `address` (4 or 16 bytes) lies in the block. An IPv4-mapped IPv6 address
    /// (`::ffff:a.b.c.d`, RFC 4291 §2.5.5.2) matches IPv4 blocks, as dual-stack sockets report them.
    package func contains(_ address: [UInt8]) -> Bool {
        var address = address
        if bytes.count == 4, address.count == 16, address[0..<10].allSatisfy({ $0 == 0 }), address[10] == 0xff, address[11] == 0xff {
            address = Array(address[12...])
        }
        guard address.count == bytes.count else { return false }
        var remaining = prefix
        for index in 0..<bytes.count where remaining > 0 {
            let bits = min(8, remaining)
            let mask = UInt8(truncatingIfNeeded: 0xff << (8 - bits))
            if address[index] & mask != bytes[index] & mask { return false }
            remaining -= bits
        }
        return true
    }

    /// `address/prefix`.
    package var description: String { "\(IPAddress.text(of: bytes))/\(prefix)" }
}

/// Textual IP addresses, parsed and printed by the C library (`inet_pton`/`inet_ntop`).
package enum IPAddress {
    /// The 4 or 16 bytes of a dotted IPv4 or an RFC 4291 IPv6 address; nil otherwise.
    package static func bytes(of text: String) -> [UInt8]? {
        guard !text.isEmpty, text.utf8.count <= 64 else { return nil }
        var v4 = in_addr()
        if inet_pton(AF_INET, text, &v4) == 1 {
            return withUnsafeBytes(of: &v4) { Array($0) }
        }
        var v6 = in6_addr()
        if inet_pton(AF_INET6, text, &v6) == 1 {
            return withUnsafeBytes(of: &v6) { Array($0) }
        }
        return nil
    }

    /// The canonical text of 4 or 16 address bytes (RFC 5952 form for IPv6), so one client is one
    /// rate-limit key however its address was spelled.
    package static func text(of bytes: [UInt8]) -> String {
        var buffer = [CChar](repeating: 0, count: 64)
        let family = bytes.count == 4 ? AF_INET : AF_INET6
        let ok = bytes.withUnsafeBytes { raw in inet_ntop(family, raw.baseAddress, &buffer, socklen_t(buffer.count)) != nil }
        return ok ? String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self) : "unknown"
    }
}

/// Which TCP peers are reverse proxies whose `Forwarded` (RFC 7239) or `X-Forwarded-For`
/// headers say who the client is (`CAIRN_TRUSTED_PROXIES`, comma-separated CIDR blocks).
/// Empty by default: the peer address is the client, and those headers are ignored, so a
/// client cannot choose the address its rate limits are counted against.
package struct TrustedProxies: Sendable, Equatable {
    /// The trusted blocks.
    package var blocks: [CIDRBlock]

    /// No trusted proxies.
    package init(blocks: [CIDRBlock] = []) {
        self.blocks = blocks
    }

    /// Parses a comma-separated list of CIDR blocks (`10.0.0.0/8, 2001:db8::/32`).
    /// - Throws: ``Invalid`` naming the first entry that is not a CIDR block.
    package init(parsing text: String) throws {
        var blocks: [CIDRBlock] = []
        for entry in text.split(separator: ",") {
            let trimmed = entry.trimmingCharacters(in: .whitespaces)
            if trimmed.isEmpty { continue }
            guard let block = CIDRBlock(trimmed) else { throw Invalid(entry: trimmed) }
            blocks.append(block)
        }
        self.blocks = blocks
    }

    /// An entry of the list that is not a CIDR block.
    package struct Invalid: Error, CustomStringConvertible {
        /// The bad entry.
        package var entry: String
        /// One line for the configuration error.
        package var description: String { "'\(entry)' is not an IP address or CIDR block (such as 10.0.0.0/8 or 2001:db8::/32)" }
    }

    /// True when `address` (4 or 16 bytes) is in a trusted block.
    package func trusts(_ address: [UInt8]) -> Bool {
        blocks.contains { $0.contains(address) }
    }

    /// The client's address for a request that arrived from `peer`.
    ///
    /// Unless the peer is trusted, it is the peer. Otherwise the forwarding chain (`Forwarded`'s
    /// `for=` parameters when present, else `X-Forwarded-For`) is walked from the right — the
    /// entry the nearest proxy appended — skipping trusted hops; the first untrusted hop is the
    /// client. A hop that is `unknown` or not parseable stops the walk at the last trusted hop
    /// (entries left of it could be anything the client sent); an RFC 7239 §6.3 obfuscated
    /// identifier (`_abc`) written by a trusted proxy is kept as the client's key.
    package func clientAddress(peer: String, headers: HTTPFields) -> String {
        guard !blocks.isEmpty, let peerBytes = IPAddress.bytes(of: peer), trusts(peerBytes) else { return peer }
        var current = IPAddress.text(of: peerBytes)
        for hop in Self.forwardingChain(headers).reversed() {
            switch Self.node(hop) {
            case .address(let bytes):
                current = IPAddress.text(of: bytes)
                if !trusts(bytes) { return current }
            case .obfuscated(let identifier):
                return identifier
            case .unknown:
                return current
            }
        }
        return current
    }

    /// True when `peer` is a trusted proxy whose nearest forwarding header says the client used
    /// HTTPS: the last `proto=` of `Forwarded` (RFC 7239 §5.4) when present, else the last
    /// entry of `X-Forwarded-Proto`.
    package func saysHTTPS(peer: String, headers: HTTPFields) -> Bool {
        guard !blocks.isEmpty, let peerBytes = IPAddress.bytes(of: peer), trusts(peerBytes) else { return false }
        let forwarded = headers[values: .forwarded]
        if !forwarded.isEmpty {
            let protos = forwarded.flatMap { $0.split(separator: ",") }.compactMap { element -> Substring? in
                element.split(separator: ";").map { $0.trimmingCharacters(in: .whitespaces) }
                    .first { $0.lowercased().hasPrefix("proto=") }
                    .map { Substring($0.dropFirst("proto=".count)) }
            }
            if let last = protos.last { return last.trimmingCharacters(in: CharacterSet(charactersIn: "\"")).lowercased() == "https" }
        }
        let entries = headers[values: .xForwardedProto].flatMap { $0.split(separator: ",") }
        return entries.last.map { $0.trimmingCharacters(in: .whitespaces).lowercased() == "https" } ?? false
    }

    /// A forwarded node (RFC 7239 §6).
    enum Node: Equatable {
        case address([UInt8])
        case obfuscated(String)
        case unknown
    }

    /// The `for=` values of every `Forwarded` field, in order; if there are none, the
    /// entries of every `X-Forwarded-For` field.
    static func forwardingChain(_ headers: HTTPFields) -> [String] {
        let forwarded = headers[values: .forwarded]
        if !forwarded.isEmpty {
            return forwarded.flatMap { value in
                splitOutsideQuotes(value, on: ",").compactMap { element in
                    for pair in splitOutsideQuotes(element, on: ";") {
                        let parts = pair.split(separator: "=", maxSplits: 1)
                        if parts.count == 2, parts[0].trimmingCharacters(in: .whitespaces).lowercased() == "for" {
                            return unquote(parts[1].trimmingCharacters(in: .whitespaces))
                        }
                    }
                    // An element without `for=` still stands for one hop whose client is unknown.
                    return "unknown"
                }
            }
        }
        return headers[values: .xForwardedFor].flatMap { $0.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) } }
    }

    /// Parses one node: `192.0.2.1`, `192.0.2.1:8080`, `[2001:db8::1]`, `[2001:db8::1]:443`,
    /// a bare IPv6 address (as `X-Forwarded-For` writes them), `_hidden`, or `unknown`.
    static func node(_ text: String) -> Node {
        if text.hasPrefix("_"), text.count > 1, text.count <= 64,
            text.dropFirst().allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || "._-".contains($0)) })
        {
            return .obfuscated(text)
        }
        var host = Substring(text)
        if host.hasPrefix("[") {
            guard let close = host.firstIndex(of: "]") else { return .unknown }
            let rest = host[host.index(after: close)...]
            guard rest.isEmpty || (rest.hasPrefix(":") && rest.count > 1) else { return .unknown }
            host = host[host.index(after: host.startIndex)..<close]
            guard host.contains(":"), let bytes = IPAddress.bytes(of: String(host)) else { return .unknown }
            return .address(bytes)
        }
        if host.filter({ $0 == ":" }).count == 1, let colon = host.firstIndex(of: ":") {
            host = host[..<colon]  // IPv4 with a port
        }
        guard let bytes = IPAddress.bytes(of: String(host)) else { return .unknown }
        return .address(bytes)
    }

    /// Splits on `separator` outside RFC 7230 quoted strings.
    static func splitOutsideQuotes(_ text: String, on separator: Character) -> [String] {
        var parts: [String] = []
        var current = ""
        var quoted = false
        var escaped = false
        for character in text {
            if escaped {
                escaped = false
            } else if quoted && character == "\\" {
                escaped = true
            } else if character == "\"" {
                quoted.toggle()
            } else if character == separator && !quoted {
                parts.append(current.trimmingCharacters(in: .whitespaces))
                current = ""
                continue
            }
            current.append(character)
        }
        parts.append(current.trimmingCharacters(in: .whitespaces))
        return parts.filter { !$0.isEmpty }
    }

    /// Removes RFC 7230 quoting (`"[2001:db8::1]:80"`, with `\` escapes) from a value.
    static func unquote(_ value: String) -> String {
        guard value.count >= 2, value.hasPrefix("\""), value.hasSuffix("\"") else { return value }
        var result = ""
        var escaped = false
        for character in value.dropFirst().dropLast() {
            if !escaped && character == "\\" {
                escaped = true
                continue
            }
            escaped = false
            result.append(character)
        }
        return result
    }
}

extension HTTPField.Name {
    /// RFC 7239 `Forwarded`.
    static let forwarded = HTTPField.Name("Forwarded")!
    /// The de-facto `X-Forwarded-For`.
    static let xForwardedFor = HTTPField.Name("X-Forwarded-For")!
    /// The de-facto `X-Forwarded-Proto`.
    static let xForwardedProto = HTTPField.Name("X-Forwarded-Proto")!
}

/// Sets ``CairnRequestContext/clientAddress`` from the proxies' headers when the TCP peer is a
/// trusted proxy (see ``TrustedProxies/clientAddress(peer:headers:)``); every per-address
/// limit reads that field.
package struct ClientAddressMiddleware: RouterMiddleware {
    /// The request context.
    package typealias Context = CairnRequestContext
    let proxies: TrustedProxies

    /// Creates the middleware.
    package init(proxies: TrustedProxies) {
        self.proxies = proxies
    }

    /// Resolves the client address, then calls the next handler.
    package func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        guard !proxies.blocks.isEmpty else { return try await next(request, context) }
        var context = context
        context.forwardedHTTPS = proxies.saysHTTPS(peer: context.clientAddress, headers: request.headers)
        context.clientAddress = proxies.clientAddress(peer: context.clientAddress, headers: request.headers)
        return try await next(request, context)
    }
}
