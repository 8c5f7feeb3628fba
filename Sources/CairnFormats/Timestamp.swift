package import Foundation

/// RFC 3339 UTC timestamps with milliseconds (`2026-11-29T16:29:15.123Z`), from and to
/// Unix epoch milliseconds, which is how every table stores time on both engines.
package enum Timestamp {
    /// Formats epoch milliseconds; uses the proleptic Gregorian calendar (days-from-civil
    /// algorithm by Howard Hinnant), without Foundation's slower formatters.
    package static func format(milliseconds: Int64) -> String {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(24)
        append(milliseconds: milliseconds, to: &bytes)
        return String(decoding: bytes, as: UTF8.self)
    }

    /// Appends the text of `format(milliseconds:)` to `out` digit by digit, without making a
    /// String: the one formatter behind JSON and CSV timestamps. A year outside 0...9999 is
    /// written as a plain decimal (RFC 3339 has no form for it).
    package static func append(milliseconds: Int64, to out: inout [UInt8]) {
        let (year, month, day, hour, minute, second, millisecond) = components(milliseconds: milliseconds)
        // Formatted on the stack and appended once: 24 separate appends cost more than the digits.
        withUnsafeTemporaryAllocation(of: UInt8.self, capacity: 24) { text in
            ("0000-00-00T00:00:00.000Z" as StaticString).withUTF8Buffer { _ = text.initialize(fromContentsOf: $0) }
            // Field by field, not a loop over an array of them: the array was allocated on
            // every call, and reports format two timestamps a row.
            func put(_ value: Int, at offset: Int, width: Int) {
                var rest = value
                for index in stride(from: offset + width - 1, through: offset, by: -1) {
                    text[index] = UInt8(ascii: "0") &+ UInt8(truncatingIfNeeded: rest % 10)
                    rest /= 10
                }
            }
            put(year, at: 0, width: 4)
            put(month, at: 5, width: 2)
            put(day, at: 8, width: 2)
            put(hour, at: 11, width: 2)
            put(minute, at: 14, width: 2)
            put(second, at: 17, width: 2)
            put(millisecond, at: 20, width: 3)
            if (0...9999).contains(year) {
                out.append(contentsOf: UnsafeBufferPointer(text))
            } else {
                out.append(contentsOf: String(year).utf8)
                out.append(contentsOf: UnsafeBufferPointer(rebasing: text[4...]))
            }
        }
    }

    /// UTC calendar fields of epoch milliseconds: year, month, day, hour, minute, second, millisecond.
    package static func components(milliseconds: Int64) -> (Int, Int, Int, Int, Int, Int, Int) {
        let ms = Int(((milliseconds % 1000) + 1000) % 1000)
        var seconds = (milliseconds - Int64(ms)) / 1000
        let days = Int(floorDiv(seconds, 86_400))
        seconds -= Int64(days) * 86_400
        let secondOfDay = Int(seconds)
        let (year, month, day) = civil(fromDays: days)
        return (year, month, day, secondOfDay / 3600, (secondOfDay / 60) % 60, secondOfDay % 60, ms)
    }

    /// Parses an RFC 3339 §5.6 `date-time` (`2026-11-29T16:29:15Z`): upper-case `T` and `Z`,
    /// an optional fraction of any length (rounded to the millisecond), `Z` or a `±hh:mm`
    /// offset. Returns nil for anything else, impossible dates such as February 30 and leap
    /// seconds included (as the HTTP contract documents).
    ///
    /// Hand-written rather than `ISO8601DateFormatter`: that costs about 0.1 ms per call on Linux
    /// (ICU set-up), which dominated batch enqueues.
    package static func parse(_ text: String) -> Date? {
        parseMilliseconds(text).map { Date(timeIntervalSince1970: Double($0) / 1000) }
    }

    /// Like `parse(_:)`, in epoch milliseconds.
    package static func parseMilliseconds(_ text: String) -> Int64? {
        var text = text
        return text.withUTF8 { parseMilliseconds(utf8: $0) }
    }

    /// Like `parse(_:)`, in epoch milliseconds, from UTF-8 bytes (no String made: the loader
    /// checks every timestamp of a file).
    package static func parseMilliseconds(utf8 b: UnsafeBufferPointer<UInt8>) -> Int64? {
        var i = 0
        func digits(_ count: Int) -> Int? {
            guard i + count <= b.count else { return nil }
            var value = 0
            for k in i..<(i + count) {
                guard (0x30...0x39).contains(b[k]) else { return nil }
                value = value * 10 + Int(b[k] - 0x30)
            }
            i += count
            return value
        }
        func expect(_ byte: UInt8...) -> Bool {
            guard i < b.count, byte.contains(b[i]) else { return false }
            i += 1
            return true
        }
        guard let year = digits(4), expect(0x2D), let month = digits(2), expect(0x2D), let day = digits(2), expect(0x54),
            let hour = digits(2), expect(0x3A), let minute = digits(2), expect(0x3A), let second = digits(2)
        else { return nil }
        guard (1...12).contains(month), day >= 1, day <= daysIn(month: month, year: year), hour <= 23, minute <= 59, second <= 59 else {
            return nil
        }
        var millis = 0
        if i < b.count, b[i] == 0x2E {
            i += 1
            var scale = 1000
            var tenths = 0  // the fraction in units of 0.1 ms, for rounding
            let start = i
            while i < b.count, (0x30...0x39).contains(b[i]) {
                tenths += Int(b[i] - 0x30) * scale
                scale /= 10
                i += 1
            }
            guard i > start else { return nil }
            millis = (tenths + 5) / 10
        }
        var offsetMinutes = 0
        if expect(0x5A) {
        } else if i < b.count, b[i] == 0x2B || b[i] == 0x2D {
            let sign = b[i] == 0x2D ? -1 : 1
            i += 1
            guard let oh = digits(2), expect(0x3A), let om = digits(2), oh <= 23, om <= 59 else { return nil }
            offsetMinutes = sign * (oh * 60 + om)
        } else {
            return nil
        }
        guard i == b.count else { return nil }
        let seconds = Int64(days(fromCivil: year, month, day)) * 86_400 + Int64(hour * 3600 + minute * 60 + second) - Int64(offsetMinutes * 60)
        let result = seconds * 1000 + Int64(millis)
        // Only instants Cairn writes back as four-digit years: rounding (59.9996 s) or an offset
        // can carry 9999-12-31 into year 10000 or 0000-01-01 into year -1, which `format` would
        // write as text this parser refuses (found by fuzzing).
        guard (Self.earliestMilliseconds...Self.latestMilliseconds).contains(result) else { return nil }
        return result
    }

    /// 0000-01-01T00:00:00.000Z, in epoch milliseconds: the earliest instant `parse` accepts.
    static let earliestMilliseconds = Int64(days(fromCivil: 0, 1, 1)) * 86_400_000
    /// 9999-12-31T23:59:59.999Z, in epoch milliseconds: the latest instant `parse` accepts.
    static let latestMilliseconds = Int64(days(fromCivil: 10_000, 1, 1)) * 86_400_000 - 1

    static func daysIn(month: Int, year: Int) -> Int {
        switch month {
        case 2: return (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 ? 29 : 28
        case 4, 6, 9, 11: return 30
        default: return 31
        }
    }

    /// Days since 1970-01-01 of a proleptic Gregorian date (Hinnant's days-from-civil).
    static func days(fromCivil year: Int, _ month: Int, _ day: Int) -> Int {
        let y = month <= 2 ? year - 1 : year
        let era = (y >= 0 ? y : y - 399) / 400
        let yoe = y - era * 400
        let doy = (153 * (month > 2 ? month - 3 : month + 9) + 2) / 5 + day - 1
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy
        return era * 146_097 + doe - 719_468
    }

    private static func floorDiv(_ a: Int64, _ b: Int64) -> Int64 {
        a >= 0 ? a / b : -((-a + b - 1) / b)
    }

    static func civil(fromDays z0: Int) -> (Int, Int, Int) {
        let z = z0 + 719_468
        let era = (z >= 0 ? z : z - 146_096) / 146_097
        let doe = z - era * 146_097
        let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365
        let y = yoe + era * 400
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100)
        let mp = (5 * doy + 2) / 153
        let d = doy - (153 * mp + 2) / 5 + 1
        let m = mp < 10 ? mp + 3 : mp - 9
        return (m <= 2 ? y + 1 : y, m, d)
    }
}
