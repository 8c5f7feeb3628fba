import CairnHTTP
import CairnTestSupport
import Foundation
import Testing

@Suite("JSONValue's text (how free-form JSON is stored)")
struct JSONValueTextTests {
    /// The text earlier versions stored: Foundation's encoder with the options they used.
    static func encoderText(_ value: JSONValue) throws -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return String(decoding: try encoder.encode(value), as: UTF8.self)
    }

    /// A value of at most `depth` levels from `generator`: every kind, member names that sort
    /// differently by bytes, numbers and case (`a10`, `a9`, `B`, `a`, `é`, `😀`), numbers
    /// around the integer and exponent boundaries, strings with quotes, slashes, controls.
    static func value(_ generator: inout some RandomNumberGenerator, depth: Int) -> JSONValue {
        let names = ["a10", "a9", "B", "a", "_", "é", "Z", "aa", "1", "10", "9", "😀", "Ａ", "a/b", "q\"", "\u{1}", ""]
        let numbers: [Double] = [
            0, -0.0, 1, -1, 1.5, 100, 0.1, 1e15, 9_999_999_999_999_998, 1e16, -1e16, 1e21, 1e-7, .leastNonzeroMagnitude, 2.5e-8, 123_456.789,
            9_007_199_254_740_992, 1.7976931348623157e308, -3.25,
        ]
        let strings = ["", "plain", "quote \" and \\ back", "a/b//c", "line\nbreak\ttab\rreturn", "\u{0}\u{1f}\u{7f}", "é 漢字 😀 \u{2028}"]
        switch Int.random(in: 0..<(depth > 0 ? 7 : 4), using: &generator) {
        case 0: return .null
        case 1: return .bool(Bool.random(using: &generator))
        case 2:
            if Bool.random(using: &generator) { return .number(numbers.randomElement(using: &generator)!) }
            return .number(Double.random(in: -1e6...1e6, using: &generator) * [1, 1e-9, 1e12].randomElement(using: &generator)!)
        case 3: return .string(strings.randomElement(using: &generator)!)
        case 4: return .array((0..<Int.random(in: 0...4, using: &generator)).map { _ in value(&generator, depth: depth - 1) })
        default:
            var members: [String: JSONValue] = [:]
            for _ in 0..<Int.random(in: 0...6, using: &generator) {
                members[names.randomElement(using: &generator)!] = value(&generator, depth: depth - 1)
            }
            return .object(members)
        }
    }

    /// Written directly, the text is byte for byte what `JSONEncoder` wrote, so text stored by
    /// earlier versions and text written now for the same value are equal: 2,000 generated
    /// values (a fixed seed) and the edge cases named.
    @Test func textIsWhatTheEncoderWrote() throws {
        var generator = SeededGenerator(seed: 0x5EED_CA1E)
        for _ in 0..<2000 {
            let value = Self.value(&generator, depth: 3)
            let expected = try Self.encoderText(value)
            #expect(value.text == expected)
        }
        #expect(
            JSONValue.object(["b": .number(100), "a": .array([.number(-0.0), .number(1e16), .number(0.5)])]).text == #"{"a":[-0,1e+16,0.5],"b":100}"#)
        #expect(JSONValue.object(["a10": .null, "a9": .null, "B": .null]).text == #"{"B":null,"a10":null,"a9":null}"#)
    }

    /// Backspace and form feed are written as every other JSON text of Cairn writes them
    /// (`\u0008`, `\u000c`) and read back as the same value; a number JSON cannot hold is
    /// written `null`, alone, where the encoder refused the whole value.
    @Test func controlsAndNumbersJSONCannotHold() {
        let value = JSONValue.object(["s": .string("\u{8}\u{c}")])
        #expect(value.text == #"{"s":"\u0008\u000c"}"#)
        #expect(JSONValue(text: value.text) == value)
        #expect(JSONValue.array([.number(1), .number(.nan), .number(-.infinity)]).text == "[1,null,null]")
    }
}
