import CairnFormats

/// One JSON text in a canonical form, so that two bodies that say the same thing compare equal
/// whatever their layout: the reference is RFC 8785 (JSON Canonicalization Scheme), with
/// numbers kept as written.
///
/// What is canonicalised: insignificant whitespace is dropped (RFC 8259 §2); object members are
/// sorted by their names' UTF-16 code units (RFC 8785 §3.2.3); strings and member names are
/// read (escapes decoded) and written again with the one escaper (`\"`, `\\`, `\n`, `\r`, `\t`,
/// other controls as `\u00xx`, everything else as UTF-8), so `"\u0041"` and `"A"` are one
/// string. What is not: numbers keep their source text (`1.0` and `1` differ, as JCS's
/// ECMAScript number formatting is not implemented), array order, and a leading byte order
/// mark is dropped (RFC 8259 §8.1).
package enum CanonicalJSON {
    /// The canonical form of `bytes`, or nil when they are not one JSON text as request bodies
    /// accept it (RFC 8259, strictly: no repeated member name in an object, no lone surrogate
    /// escape, at most ``maximumJSONDepth`` levels of nesting).
    package static func canonical(_ bytes: UnsafeBufferPointer<UInt8>) -> [UInt8]? {
        var start = 0
        if bytes.count >= 3, bytes[0] == 0xEF, bytes[1] == 0xBB, bytes[2] == 0xBF { start = 3 }
        let text = UnsafeBufferPointer(rebasing: bytes[start...])
        var writer = Writer(scanner: JSONScanner(text, loneSurrogates: .refuse, stringFaults: .inOrder))
        do {
            writer.scanner.skipWhitespace()
            var out: [UInt8] = []
            out.reserveCapacity(text.count)
            try writer.value(into: &out, depth: 0)
            writer.scanner.skipWhitespace()
            return writer.scanner.atEnd ? out : nil
        } catch {
            return nil
        }
    }

    /// Why a text has no canonical form (its details do not matter: such a body is hashed as it is).
    struct NotCanonicalizable: Error {}

    private struct Writer {
        var scanner: JSONScanner

        mutating func value(into out: inout [UInt8], depth: Int) throws {
            guard !scanner.atEnd else { throw NotCanonicalizable() }
            switch scanner.current {
            case UInt8(ascii: "{"):
                guard depth < maximumJSONDepth else { throw NotCanonicalizable() }
                try object(into: &out, depth: depth + 1)
            case UInt8(ascii: "["):
                guard depth < maximumJSONDepth else { throw NotCanonicalizable() }
                out.append(UInt8(ascii: "["))
                if !scanner.enter(closing: UInt8(ascii: "]")) {
                    var first = true
                    repeat {
                        if !first { out.append(UInt8(ascii: ",")) }
                        first = false
                        try value(into: &out, depth: depth + 1)
                    } while try scanner.next(closing: UInt8(ascii: "]"))
                }
                out.append(UInt8(ascii: "]"))
            case UInt8(ascii: "\""):
                JSONString.append(try scanner.string(), to: &out)
            case UInt8(ascii: "t"), UInt8(ascii: "f"), UInt8(ascii: "n"):
                let start = scanner.position
                _ = try scanner.scalar()
                out.append(contentsOf: UnsafeBufferPointer(rebasing: scanner.bytes[start..<scanner.position]))
            default:
                // A number, kept as written (the scanner checks its RFC 8259 §6 syntax).
                let start = scanner.position
                _ = try scanner.number()
                out.append(contentsOf: UnsafeBufferPointer(rebasing: scanner.bytes[start..<scanner.position]))
            }
        }

        mutating func object(into out: inout [UInt8], depth: Int) throws {
            var members: [(name: String, key: [UInt16], value: [UInt8])] = []
            if !scanner.enter(closing: UInt8(ascii: "}")) {
                repeat {
                    let name = try scanner.memberName()
                    try scanner.colon()
                    var value: [UInt8] = []
                    try self.value(into: &value, depth: depth)
                    members.append((name, Array(name.utf16), value))
                } while try scanner.next(closing: UInt8(ascii: "}"))
            }
            members.sort { $0.key.lexicographicallyPrecedes($1.key) }
            out.append(UInt8(ascii: "{"))
            for (index, member) in members.enumerated() {
                // Sorted, a repeated name sits next to itself (RFC 8259 §4: readers disagree on it).
                if index > 0 {
                    guard members[index - 1].key != member.key else { throw NotCanonicalizable() }
                    out.append(UInt8(ascii: ","))
                }
                JSONString.append(member.name, to: &out)
                out.append(UInt8(ascii: ":"))
                out.append(contentsOf: member.value)
            }
            out.append(UInt8(ascii: "}"))
        }
    }
}
