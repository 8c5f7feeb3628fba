import CairnHTTP
package import Foundation

/// A cron schedule: the standard 5 fields (`minute hour day-of-month month day-of-week`) with
/// lists, ranges, steps and month/day names, or `@yearly`, `@monthly`, `@weekly`, `@daily`,
/// `@hourly`; evaluated in an IANA time zone.
///
/// Semantics follow croniter (and Vixie cron): when both day-of-month and day-of-week are
/// restricted (anything but a bare `*`), a day matches if either does; day-of-week 7 is Sunday. Across daylight-saving
/// transitions a local time that does not exist is skipped and one that occurs twice fires
/// once (at its first occurrence).
package struct CronExpression: Sendable, Equatable {
    /// Equal when they fire at the same times (whatever the spelling).
    package static func == (lhs: CronExpression, rhs: CronExpression) -> Bool {
        lhs.minutes == rhs.minutes && lhs.hours == rhs.hours && lhs.daysOfMonth == rhs.daysOfMonth && lhs.months == rhs.months
            && lhs.daysOfWeek == rhs.daysOfWeek && lhs.dayOfMonthRestricted == rhs.dayOfMonthRestricted
            && lhs.dayOfWeekRestricted == rhs.dayOfWeekRestricted
    }

    /// Allowed minutes (0–59), hours (0–23), days of month (1–31), months (1–12), weekdays (0–6, Sunday 0).
    package let minutes: Set<Int>
    /// Allowed hours.
    package let hours: Set<Int>
    /// Allowed days of the month.
    package let daysOfMonth: Set<Int>
    /// Allowed months.
    package let months: Set<Int>
    /// Allowed days of the week.
    package let daysOfWeek: Set<Int>
    /// Whether day-of-month and day-of-week were each restricted (not `*`).
    let dayOfMonthRestricted: Bool
    let dayOfWeekRestricted: Bool
    /// The source text.
    package let text: String

    private static let macros = [
        "@yearly": "0 0 1 1 *", "@annually": "0 0 1 1 *", "@monthly": "0 0 1 * *", "@weekly": "0 0 * * 0", "@daily": "0 0 * * *",
        "@midnight": "0 0 * * *", "@hourly": "0 * * * *",
    ]
    private static let monthNames = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"]
    private static let dayNames = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"]

    /// Parses an expression.
    /// - Throws: 400 `invalid_input` naming the field (`cron.minute`, `cron.hour`,
    ///   `cron.dayOfMonth`, `cron.month`, `cron.dayOfWeek`, or `cron`).
    package init(_ text: String) throws {
        let trimmed = text.trimmingCharacters(in: .whitespaces)
        let expanded = Self.macros[trimmed.lowercased()] ?? trimmed
        let fields = expanded.split(whereSeparator: { $0 == " " || $0 == "\t" }).map(String.init)
        guard fields.count == 5 else {
            throw AppError.invalidField(
                "cron", "must have 5 fields (minute hour day-of-month month day-of-week) or be @hourly, @daily, @weekly, @monthly or @yearly")
        }
        self.text = trimmed
        minutes = try Self.parse(fields[0], name: "cron.minute", range: 0...59, names: [])
        hours = try Self.parse(fields[1], name: "cron.hour", range: 0...23, names: [])
        daysOfMonth = try Self.parse(fields[2], name: "cron.dayOfMonth", range: 1...31, names: [])
        months = try Self.parse(fields[3], name: "cron.month", range: 1...12, names: Self.monthNames, nameOffset: 1)
        daysOfWeek = Set(try Self.parse(fields[4], name: "cron.dayOfWeek", range: 0...7, names: Self.dayNames).map { $0 % 7 })
        dayOfMonthRestricted = fields[2] != "*"
        dayOfWeekRestricted = fields[4] != "*"
        try checkCanFire()
    }

    /// Longest month lengths, January first (February 29 exists in leap years).
    private static let monthLengths = [31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31]

    /// Refuses an expression that can never fire. Every minute and hour field allows some
    /// value and every month has every weekday, so the one way to never fire is days of the
    /// month (without days of the week, which would widen them) that none of the months has,
    /// as `0 0 30 2 *` or `0 0 31 4,6 *`. February 29 fires, in leap years.
    /// - Throws: 400 `invalid_input` on `cron.dayOfMonth`.
    private func checkCanFire() throws {
        guard dayOfMonthRestricted && !dayOfWeekRestricted else { return }
        let fires = months.contains { month in daysOfMonth.contains { $0 <= Self.monthLengths[month - 1] } }
        guard !fires else { return }
        let days = daysOfMonth.sorted().map(String.init).joined(separator: ", ")
        let names = months.sorted().map { Self.monthNames[$0 - 1].capitalized }.joined(separator: ", ")
        throw AppError.invalidField("cron.dayOfMonth", "no day chosen (\(days)) occurs in \(names): the schedule would never fire")
    }

    private static func parse(_ field: String, name: String, range: ClosedRange<Int>, names: [String], nameOffset: Int = 0) throws -> Set<Int> {
        func value(_ token: Substring) throws -> Int {
            if token.utf8.allSatisfy({ $0 >= 0x30 && $0 <= 0x39 }), let number = Int(token), range.contains(number) { return number }
            if let index = names.firstIndex(of: token.lowercased()) { return index + nameOffset }
            throw AppError.invalidField(name, "'\(token)' is not a value from \(range.lowerBound) to \(range.upperBound)")
        }
        var result = Set<Int>()
        for item in field.split(separator: ",", omittingEmptySubsequences: false) {
            let parts = item.split(separator: "/", omittingEmptySubsequences: false)
            guard parts.count <= 2, !parts[0].isEmpty else { throw AppError.invalidField(name, "'\(item)' is not a valid item") }
            var step = 1
            if parts.count == 2 {
                guard let parsed = Int(parts[1]), parsed > 0, parsed <= range.upperBound else {
                    throw AppError.invalidField(name, "step '\(parts[1])' must be a positive number")
                }
                step = parsed
            }
            let lower: Int
            var upper: Int
            if parts[0] == "*" {
                lower = range.lowerBound
                upper = range.upperBound
            } else if let dash = parts[0].firstIndex(of: "-") {
                lower = try value(parts[0][..<dash])
                upper = try value(parts[0][parts[0].index(after: dash)...])
                guard lower <= upper else { throw AppError.invalidField(name, "range '\(parts[0])' is backwards") }
            } else {
                lower = try value(parts[0])
                upper = parts.count == 2 ? range.upperBound : lower
            }
            if name == "cron.dayOfWeek" && parts[0] == "*" { upper = 6 }
            result.formUnion(stride(from: lower, through: upper, by: step))
        }
        return result
    }

    /// True when a calendar day matches the month and day fields.
    func matchesDay(month: Int, day: Int, weekday: Int) -> Bool {
        guard months.contains(month) else { return false }
        let byMonthDay = daysOfMonth.contains(day)
        let byWeekday = daysOfWeek.contains(weekday)
        if dayOfMonthRestricted && dayOfWeekRestricted { return byMonthDay || byWeekday }
        return byMonthDay && byWeekday
    }

    /// The first occurrence strictly after `instant`, in `timeZone`; nil if none within 8 years
    /// (parsing refuses expressions that never fire, so in practice never).
    package func nextOccurrence(after instant: Date, in timeZone: TimeZone) -> Date? {
        var calendar = Calendar(identifier: .gregorian)
        calendar.timeZone = timeZone
        let sortedHours = hours.sorted()
        let sortedMinutes = minutes.sorted()
        let start = calendar.dateComponents([.year, .month, .day], from: instant)
        guard var day = calendar.date(from: DateComponents(year: start.year, month: start.month, day: start.day, hour: 12)) else { return nil }
        for _ in 0..<(366 * 8) {
            let parts = calendar.dateComponents([.year, .month, .day, .weekday], from: day)
            if let year = parts.year, let month = parts.month, let dayOfMonth = parts.day, let weekday = parts.weekday,
                matchesDay(month: month, day: dayOfMonth, weekday: weekday - 1)
            {
                for hour in sortedHours {
                    for minute in sortedMinutes {
                        let wanted = DateComponents(year: year, month: month, day: dayOfMonth, hour: hour, minute: minute)
                        guard let candidate = Self.firstInstant(of: wanted, calendar: calendar), candidate > instant else { continue }
                        return candidate
                    }
                }
            }
            guard let next = calendar.date(byAdding: .day, value: 1, to: day) else { return nil }
            day = next
        }
        return nil
    }

    /// The earliest instant whose local wall-clock time is `wanted`, or nil when that local
    /// time does not exist (skipped by a daylight-saving jump).
    static func firstInstant(of wanted: DateComponents, calendar: Calendar) -> Date? {
        guard let guess = calendar.date(from: wanted) else { return nil }
        // Foundation maps a nonexistent time forward; check by converting back.
        let back = calendar.dateComponents([.year, .month, .day, .hour, .minute], from: guess)
        guard back.year == wanted.year, back.month == wanted.month, back.day == wanted.day, back.hour == wanted.hour, back.minute == wanted.minute
        else { return nil }
        // For a time that occurs twice, prefer the earlier instant (up to 3 hours earlier for
        // unusual zones; in practice one hour).
        var earliest = guess
        for hoursBack in 1...3 {
            let earlier = guess.addingTimeInterval(Double(-3600 * hoursBack))
            let local = calendar.dateComponents([.year, .month, .day, .hour, .minute], from: earlier)
            if local.year == wanted.year, local.month == wanted.month, local.day == wanted.day, local.hour == wanted.hour,
                local.minute == wanted.minute
            {
                earliest = earlier
            }
        }
        return earliest
    }
}
