import CairnHTTP
import CairnTestSupport
import Hummingbird
import Testing

/// The request log and the request span redact credential query parameters (RFC 6750 §2.3)
/// through a shortcut that skips percent-decoding for plain ASCII queries; it must redact
/// exactly what the decoding path does.
@Suite(.dedicatedThreads) struct QueryRedactionTests {
    typealias Log = RequestLogMiddleware<BasicRequestContext>

    @Test func knownQueriesAreRedactedAsByDecoding() {
        let cases: [(String, String)] = [
            ("limit=20", "limit=20"),
            ("access_token=abc", "access_token=***"),
            ("since=0&ACCESS_TOKEN=abc", "since=0&ACCESS_TOKEN=***"),
            ("Access_Token=abc&limit=1", "Access_Token=***&limit=1"),
            ("access_token", "access_token=***"),
            ("access_tokens=abc&xaccess_token=1", "access_tokens=abc&xaccess_token=1"),
            ("access%5Ftoken=abc", "access%5Ftoken=***"),
            ("ACCESS_TO\u{212A}EN=abc", "ACCESS_TO\u{212A}EN=***"),  // the Kelvin sign lower-cases to k
            ("a=access_token&b=2", "a=access_token&b=2"),
            ("&&access_token=&", "&&access_token=***&"),
        ]
        for (query, expected) in cases {
            #expect(Log.redactedQuery(query) == expected, "\(query)")
            #expect(Log.redactedQueryByDecoding(query) == expected, "\(query)")
        }
    }

    /// Random queries over an alphabet close to the parameter's name: the shortcut and the
    /// decoding path agree on every one.
    @Test func theShortcutAgreesWithDecodingOnRandomQueries() {
        let pieces = ["access_token", "ACCESS_TOKEN", "access", "_token", "a", "c", "K", "\u{212A}", "=", "&", "%5F", "%", "+", "x=1", "é"]
        var generator = SeededGenerator(seed: 0x5eed)
        var redactedSome = 0
        for _ in 0..<20_000 {
            let count = Int(generator.next() % 6) + 1
            let query = (0..<count).map { _ in pieces[Int(generator.next() % UInt64(pieces.count))] }.joined()
            let expected = Log.redactedQueryByDecoding(query)
            #expect(Log.redactedQuery(query) == expected, "\(query)")
            if expected != query { redactedSome += 1 }
        }
        #expect(redactedSome > 100, "the corpus exercises redaction")
    }
}
