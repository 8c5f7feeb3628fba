import CairnHTTP
import Testing

@Suite("Canonical JSON (the Idempotency-Key fingerprint's form of a JSON body)")
struct CanonicalJSONTests {
    func canonical(_ text: String) -> String? {
        var text = text
        return text.withUTF8 { CanonicalJSON.canonical($0) }.map { String(decoding: $0, as: UTF8.self) }
    }

    /// Whitespace goes, members are sorted by UTF-16 code units at every depth (RFC 8785
    /// §3.2.3: U+1F600, a surrogate pair from 0xD83D, sorts before U+E000), strings are written
    /// again with escapes decoded, numbers and arrays stay as written.
    @Test func layoutOrderAndEscapesDoNotMatter() {
        #expect(
            canonical(" { \"b\" : [ 3 , 1.0, -0 ,2e5 ] ,\n\t\"a\" : { \"y\" : null , \"x\" : true } } ")
                == #"{"a":{"x":true,"y":null},"b":[3,1.0,-0,2e5]}"#)
        #expect(canonical(#"{"\u0041":"\u00e9\/\n\u001f"}"#) == "{\"A\":\"é/\\n\\u001f\"}")
        #expect(canonical("{\"\u{E000}\":1,\"\u{1F600}\":2,\"a\":3,\"Z\":4}") == "{\"Z\":4,\"a\":3,\"\u{1F600}\":2,\"\u{E000}\":1}")
        #expect(canonical("\u{FEFF}[]") == "[]")
        #expect(canonical(#""text""#) == #""text""#)
        #expect(canonical("{}") == "{}")
        #expect(canonical("1") != canonical("1.0"))
    }

    /// No canonical form (the body is hashed as it is): text that is not JSON, a repeated
    /// member name (RFC 8259 §4), a lone surrogate, nesting past the body limit.
    @Test func whatIsNotOneJSONTextHasNone() {
        for text in [
            "", " ", "{", #"{"a":1,}"#, #"{"a":1}{}"#, "[01]", #"{"a":1,"a":1}"#, #"{"b":{"a":1," a":2,"a":3}}"#, #""\ud800""#, "nul",
            String(repeating: "[", count: 65) + String(repeating: "]", count: 65),
        ] {
            #expect(canonical(text) == nil, "\(text.prefix(40))")
        }
        #expect(canonical(String(repeating: "[", count: 64) + String(repeating: "]", count: 64)) != nil)
    }
}
