import CairnFormats
import CairnTestSupport
import Testing

/// The tokenizer's two policies: each JSON reader picked its own before they shared one
/// tokenizer, and each still gets what it had.
@Suite("JSON scanner", .dedicatedThreads)
struct JSONScannerTests {
    /// Reads the one string in `bytes` (opening quote at 0).
    func string(
        _ bytes: [UInt8], _ surrogates: JSONScanner.LoneSurrogates = .refuse, _ faults: JSONScanner.StringFaults = .inOrder
    ) -> Result<String, JSONScanError> {
        bytes.withUnsafeBufferPointer { buffer in
            var scanner = JSONScanner(buffer, loneSurrogates: surrogates, stringFaults: faults)
            return Result { () throws(JSONScanError) in try scanner.string() }
        }
    }

    @Test func loneSurrogatesAreRefusedOrReplaced() {
        let lone = Array(#""\ud800""#.utf8)
        #expect(string(lone, .refuse) == .failure(JSONScanError(.loneSurrogate, at: 7, tokenStart: 3)))
        #expect(string(lone, .replace) == .success("\u{FFFD}"))
        // A high half followed by another escape that is not a low half: the escape is its own.
        #expect(string(Array(#""\ud800\u0041""#.utf8), .replace) == .success("\u{FFFD}A"))
        #expect(string(Array(#""\ud83d\ude00""#.utf8), .refuse) == .success("😀"))
    }

    @Test func aStringWithTwoFaultsReportsTheOneItsReaderAlwaysDid() {
        // A bad escape (`\q`, byte 2) before a byte that is not UTF-8 (byte 3).
        let twoFaults: [UInt8] = [0x22, 0x5C, UInt8(ascii: "q"), 0xFF, 0x22]
        #expect(string(twoFaults, .refuse, .inOrder) == .failure(JSONScanError(.invalidEscape, at: 2, tokenStart: 1)))
        #expect(string(twoFaults, .replace, .wholeStringFirst) == .failure(JSONScanError(.invalidUTF8, at: 3, tokenStart: 1)))
        // A bad escape before a raw control character.
        let control: [UInt8] = [0x22, 0x5C, UInt8(ascii: "q"), 0x01, 0x22]
        #expect(string(control, .refuse, .inOrder) == .failure(JSONScanError(.invalidEscape, at: 2, tokenStart: 1)))
        #expect(string(control, .replace, .wholeStringFirst) == .failure(JSONScanError(.controlCharacter, at: 3)))
        // One fault: both agree.
        let one: [UInt8] = [0x22, UInt8(ascii: "a"), 0xFF, 0x22]
        #expect(string(one, .refuse, .inOrder) == .failure(JSONScanError(.invalidUTF8, at: 2, tokenStart: 1)))
        #expect(string(one, .replace, .wholeStringFirst) == .failure(JSONScanError(.invalidUTF8, at: 2, tokenStart: 1)))
    }

    @Test func numbersAreExactIntegersOrDoubles() {
        func number(_ text: String) -> Result<JSONNumber, JSONScanError> {
            Array(text.utf8).withUnsafeBufferPointer { buffer in
                var scanner = JSONScanner(buffer, loneSurrogates: .refuse, stringFaults: .inOrder)
                return Result { () throws(JSONScanError) in try scanner.number() }
            }
        }
        #expect(number("-9223372036854775808") == .success(.integer(.min)))
        #expect(number("9223372036854775807") == .success(.integer(.max)))
        #expect(number("9223372036854775808") == .success(.real(9.223_372_036_854_775_808e18)))
        #expect(number("1.0") == .success(.real(1)))
        #expect(number("1e400") == .success(.real(.infinity)))
        #expect(number("-1e400") == .success(.real(-.infinity)))
        #expect(number("-x") == .failure(JSONScanError(.invalidValue, at: 1, tokenStart: 0)))
        #expect(number("1.e5") == .failure(JSONScanError(.invalidNumber, at: 2, tokenStart: 0)))
    }
}
