public import Foundation

/// RFC 3339 UTC timestamps with milliseconds (`2026-11-29T16:29:15.123Z`), from and to
/// Unix epoch milliseconds, which is how every table stores time on both engines.
public enum Timestamp {
    /// Formats epoch milliseconds; uses the proleptic Gregorian calendar (days-from-civil
    /// algorithm by Howard Hinnant), without Foundation's slower formatters.
    public static func format(milliseconds: Int64) -> String {
        let (year, month, day, hour, minute, second, ms) = components(milliseconds: milliseconds)
        var out = ""
        out.reserveCapacity(24)
        pad(&out, year, 4)
        out += "-"
        pad(&out, month, 2)
        out += "-"
        pad(&out, day, 2)
        out += "T"
        pad(&out, hour, 2)
        out += ":"
        pad(&out, minute, 2)
        out += ":"
        pad(&out, second, 2)
        out += "."
        pad(&out, ms, 3)
        out += "Z"
        return out
    }

    /// UTC calendar fields of epoch milliseconds: year, month, day, hour, minute, second, millisecond.
    public static func components(milliseconds: Int64) -> (Int, Int, Int, Int, Int, Int, Int) {
        let ms = Int(((milliseconds % 1000) + 1000) % 1000)
        var seconds = (milliseconds - Int64(ms)) / 1000
        let days = Int(floorDiv(seconds, 86_400))
        seconds -= Int64(days) * 86_400
        let secondOfDay = Int(seconds)
        let (year, month, day) = civil(fromDays: days)
        return (year, month, day, secondOfDay / 3600, (secondOfDay / 60) % 60, secondOfDay % 60, ms)
    }

    /// Parses an RFC 3339 date-time (with or without fractional seconds, any offset).
    public static func parse(_ text: String) -> Date? {
        let withFraction = ISO8601DateFormatter()
        withFraction.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        if let date = withFraction.date(from: text) { return date }
        let plain = ISO8601DateFormatter()
        plain.formatOptions = [.withInternetDateTime]
        return plain.date(from: text)
    }

    private static func floorDiv(_ a: Int64, _ b: Int64) -> Int64 {
        a >= 0 ? a / b : -((-a + b - 1) / b)
    }

    private static func pad(_ out: inout String, _ value: Int, _ width: Int) {
        let text = String(value)
        if text.count < width { out += String(repeating: "0", count: width - text.count) }
        out += text
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
