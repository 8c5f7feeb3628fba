import CairnHTTP
import Foundation
import Testing

@Suite struct FastIDGeneratorTests {
    @Test func requestIDsAreVersion4UUIDsInLowerCase() throws {
        var generator = FastIDGenerator()
        for _ in 0..<1_000 {
            let text = generator.uuidString()
            #expect(text.utf8.count == 36)
            #expect(text == text.lowercased())
            // Foundation reads it back as the same UUID (RFC 9562 §4 text form).
            let uuid = try #require(UUID(uuidString: text))
            #expect(uuid.uuidString.lowercased() == text)
            let bytes = withUnsafeBytes(of: uuid.uuid) { Array($0) }
            #expect(bytes[6] >> 4 == 4, "version 4 (RFC 9562 §5.4)")
            #expect(bytes[8] >> 6 == 0b10, "variant 10 (RFC 9562 §4.1)")
        }
    }

    @Test func requestIDsDoNotRepeat() {
        var generator = FastIDGenerator()
        var seen = Set<String>()
        for _ in 0..<100_000 { seen.insert(generator.uuidString()) }
        #expect(seen.count == 100_000)
    }

    @Test func everyHexDigitPositionVaries() {
        // A digit stuck at one value (a shift or mask slip) shows up over a few hundred draws;
        // the version digit (index 14) is fixed by design and the variant's (19) takes 8-b.
        var generator = FastIDGenerator()
        var values = Array(repeating: Set<Character>(), count: 36)
        for _ in 0..<500 {
            for (index, character) in generator.uuidString().enumerated() { values[index].insert(character) }
        }
        for index in [8, 13, 18, 23] { #expect(values[index] == ["-"]) }
        #expect(values[14] == ["4"])
        #expect(values[19] == ["8", "9", "a", "b"])
        for index in 0..<36 where ![8, 13, 14, 18, 19, 23].contains(index) {
            #expect(values[index].count == 16, "digit \(index)")
        }
    }
}
