import CairnHTTP
import HTTPTypes
import Testing

@Suite("Client address behind trusted proxies")
struct ClientAddressTests {
    static func headers(_ pairs: [(String, String)]) -> HTTPFields {
        var fields = HTTPFields()
        for (name, value) in pairs { fields.append(HTTPField(name: HTTPField.Name(name)!, value: value)) }
        return fields
    }

    @Test func cidrBlocksParseAndMatchIPv4AndIPv6() throws {
        let proxies = try TrustedProxies(parsing: " 10.0.0.0/8, 192.0.2.7 ,2001:db8::/32,::1")
        #expect(proxies.blocks.map(\.description) == ["10.0.0.0/8", "192.0.2.7/32", "2001:db8::/32", "::1/128"])
        for trusted in ["10.255.1.2", "192.0.2.7", "2001:db8:ffff::1", "::1", "::ffff:10.1.2.3"] {
            #expect(proxies.trusts(IPAddress.bytes(of: trusted)!), "\(trusted)")
        }
        for untrusted in ["11.0.0.1", "192.0.2.8", "2001:db9::1", "::2"] {
            #expect(!proxies.trusts(IPAddress.bytes(of: untrusted)!), "\(untrusted)")
        }
        #expect(CIDRBlock("10.0.0.0/12")!.contains(IPAddress.bytes(of: "10.15.255.255")!))
        #expect(!CIDRBlock("10.0.0.0/12")!.contains(IPAddress.bytes(of: "10.16.0.0")!))
        #expect(CIDRBlock("0.0.0.0/0")!.contains(IPAddress.bytes(of: "203.0.113.9")!))
        for bad in ["10.0.0.0/33", "::/129", "10.0.0/8", "example.com", "10.0.0.0/", "10.0.0.0/8/8", "/8", "10.0.0.0/-1"] {
            #expect(throws: TrustedProxies.Invalid.self, "\(bad)") { try TrustedProxies(parsing: bad) }
        }
    }

    @Test func withoutTrustedProxiesTheHeadersAreIgnored() {
        let fields = Self.headers([("X-Forwarded-For", "203.0.113.5"), ("Forwarded", "for=198.51.100.1")])
        #expect(TrustedProxies().clientAddress(peer: "192.0.2.1", headers: fields) == "192.0.2.1")
    }

    @Test func anUntrustedPeerIsTheClientWhateverItForwards() throws {
        let proxies = try TrustedProxies(parsing: "10.0.0.0/8")
        let fields = Self.headers([("X-Forwarded-For", "203.0.113.5")])
        #expect(proxies.clientAddress(peer: "192.0.2.1", headers: fields) == "192.0.2.1")
    }

    @Test func xForwardedForIsWalkedFromTheRightSkippingTrustedHops() throws {
        let proxies = try TrustedProxies(parsing: "10.0.0.0/8")
        // The leftmost entry is what the client sent; the proxies appended the rest.
        var fields = Self.headers([("X-Forwarded-For", "1.2.3.4, 203.0.113.5, 10.0.0.2")])
        #expect(proxies.clientAddress(peer: "10.0.0.1", headers: fields) == "203.0.113.5")
        // Several fields form one list, in order; IPv6 entries are canonicalised.
        fields = Self.headers([("X-Forwarded-For", "1.2.3.4"), ("X-Forwarded-For", "2001:DB8:0:0::7, 10.9.9.9")])
        #expect(proxies.clientAddress(peer: "10.0.0.1", headers: fields) == "2001:db8::7")
        // Every hop trusted: the leftmost is the client.
        fields = Self.headers([("X-Forwarded-For", "10.1.1.1, 10.2.2.2")])
        #expect(proxies.clientAddress(peer: "10.0.0.1", headers: fields) == "10.1.1.1")
        // No header: the proxy itself.
        #expect(proxies.clientAddress(peer: "10.0.0.1", headers: [:]) == "10.0.0.1")
        // Garbage right of the trusted hops stops the walk at the last trusted hop.
        fields = Self.headers([("X-Forwarded-For", "203.0.113.5, not-an-address, 10.0.0.2")])
        #expect(proxies.clientAddress(peer: "10.0.0.1", headers: fields) == "10.0.0.2")
    }

    @Test func forwardedHandlesQuotingIPv6BracketsPortsAndObfuscatedIds() throws {
        let proxies = try TrustedProxies(parsing: "10.0.0.0/8, 2001:db8:aaaa::/48")
        let cases: [(String, String)] = [
            ("for=192.0.2.60;proto=http;by=203.0.113.43", "192.0.2.60"),
            ("For=\"[2001:db8:cafe::17]:4711\"", "2001:db8:cafe::17"),
            ("for=\"[2001:db8:cafe::17]\"", "2001:db8:cafe::17"),
            ("for=\"192.0.2.43:47011\"", "192.0.2.43"),
            ("for=192.0.2.43, for=198.51.100.17", "198.51.100.17"),
            ("for=198.51.100.17, for=\"[2001:db8:aaaa::5]\", for=10.0.0.3", "198.51.100.17"),
            ("proto=https;for=\"_hidden\", for=10.0.0.3", "_hidden"),
            ("for=\"_gazonk\"", "_gazonk"),
            // `unknown`, or an element without `for=`, stops at the last trusted hop.
            ("for=unknown, for=10.0.0.3", "10.0.0.3"),
            ("by=10.0.0.9;proto=https", "10.0.0.1"),
            // A comma or semicolon inside quotes does not split.
            ("for=\"198.51.100.9\";host=\"a,b;c\"", "198.51.100.9"),
            ("for=\"[2001:db8:cafe::17\"", "10.0.0.1"),
        ]
        for (value, expected) in cases {
            let fields = Self.headers([("Forwarded", value), ("X-Forwarded-For", "203.0.113.200")])
            #expect(proxies.clientAddress(peer: "10.0.0.1", headers: fields) == expected, "\(value)")
        }
    }
}
