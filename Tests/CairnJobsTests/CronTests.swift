import CairnFormats
import CairnHTTP
import CairnJobs
import CairnTestSupport
import Foundation
import Testing

@Suite("Cron expressions", .dedicatedThreads)
struct CronTests {
    static let utc = TimeZone(identifier: "UTC")!

    func date(_ text: String) -> Date { Timestamp.parse(text)! }

    func next(_ expression: String, after: String, in zone: String = "UTC") throws -> String? {
        try CronExpression(expression).nextOccurrence(after: date(after), in: TimeZone(identifier: zone)!).map {
            Timestamp.format(milliseconds: Int64($0.timeIntervalSince1970 * 1000))
        }
    }

    @Test func parsesListsRangesStepsNamesAndMacros() throws {
        let expression = try CronExpression("0,30 9-17/2 * JAN-mar mon-FRI")
        #expect(expression.minutes == [0, 30])
        #expect(expression.hours == [9, 11, 13, 15, 17])
        #expect(expression.months == [1, 2, 3])
        #expect(expression.daysOfWeek == [1, 2, 3, 4, 5])
        #expect(try CronExpression("@hourly") == CronExpression("0 * * * *"))
        #expect(try CronExpression("* * * * 7").daysOfWeek == [0])
        #expect(try CronExpression("5/15 * * * *").minutes == [5, 20, 35, 50])
        #expect(try next("@daily", after: "2026-03-01T10:00:00Z") == "2026-03-02T00:00:00.000Z")
        #expect(try next("0 0 29 2 *", after: "2026-03-01T00:00:00Z") == "2028-02-29T00:00:00.000Z")
    }

    /// Issue 20: an expression that can never fire is refused when parsed, naming the field;
    /// one that fires only rarely (February 29, a weekday or an impossible day) is kept.
    @Test func anExpressionThatNeverFiresIsRefused() throws {
        for never in ["0 0 30 2 *", "0 0 31 2 *", "0 0 31 4,6,9,11 *", "* * 30-31 feb *", "0 0 30,31 2 *"] {
            do {
                _ = try CronExpression(never)
                Issue.record("\(never) was accepted")
            } catch let error as AppError {
                #expect(error.errors.map(\.field) == ["cron.dayOfMonth"], "\(never)")
                #expect(error.errors.first?.issue.contains("never fire") == true)
            }
        }
        for rare in ["0 0 29 2 *", "0 0 30 2 1", "0 0 31 2,3 *", "0 0 1-31 2 *"] {
            #expect(throws: Never.self, "\(rare)") { try CronExpression(rare) }
            #expect(try next(rare, after: "2026-03-02T00:00:00Z") != nil, "\(rare)")
        }
    }

    @Test(arguments: [
        ("61 * * * *", "cron.minute"), ("* 24 * * *", "cron.hour"), ("* * 0 * *", "cron.dayOfMonth"), ("* * * 13 *", "cron.month"),
        ("* * * * 8", "cron.dayOfWeek"), ("* * * * FUNDAY", "cron.dayOfWeek"), ("*/0 * * * *", "cron.minute"), ("5-1 * * * *", "cron.minute"),
        ("* * *", "cron"), ("@often", "cron"), ("1,,2 * * * *", "cron.minute"),
    ])
    func invalidExpressionsNameTheField(expression: String, field: String) {
        do {
            _ = try CronExpression(expression)
            Issue.record("accepted \(expression)")
        } catch let error as AppError {
            #expect(error.code == .invalidInput)
            #expect(error.errors.first?.field == field, "\(expression)")
        } catch {
            Issue.record("unexpected \(error)")
        }
    }

    @Test func dayOfMonthAndDayOfWeekMatchEitherWhenBothAreRestricted() throws {
        // The 13th, or any Friday (Vixie cron): from Monday 2026-02-09, the next is Friday the 13th, then Friday the 20th.
        #expect(try next("0 0 13 * 5", after: "2026-02-09T00:00:00Z") == "2026-02-13T00:00:00.000Z")
        #expect(try next("0 0 13 * 5", after: "2026-02-13T00:00:00Z") == "2026-02-20T00:00:00.000Z")
        #expect(try next("0 0 13 * *", after: "2026-02-13T00:00:00Z") == "2026-03-13T00:00:00.000Z")
    }

    @Test func daylightSavingGapsAreSkippedAndRepeatsFireOnce() throws {
        // New York springs forward 2026-03-08 02:00 → 03:00: 02:30 does not exist that day.
        #expect(try next("30 2 * * *", after: "2026-03-07T08:00:00Z", in: "America/New_York") == "2026-03-09T06:30:00.000Z")
        // Falls back 2026-11-01 02:00 → 01:00: 01:30 happens twice and fires once, at the first (EDT, UTC-4).
        let first = try next("30 1 * * *", after: "2026-11-01T04:00:00Z", in: "America/New_York")
        #expect(first == "2026-11-01T05:30:00.000Z")
        #expect(try next("30 1 * * *", after: first ?? "", in: "America/New_York") == "2026-11-02T06:30:00.000Z")
        // Every 15 minutes through the repeated hour: no occurrence runs twice.
        var instant = date("2026-11-01T04:50:00Z")
        var locals: [String] = []
        var calendar = Calendar(identifier: .gregorian)
        calendar.timeZone = TimeZone(identifier: "America/New_York")!
        for _ in 0..<12 {
            instant = try CronExpression("*/15 * * * *").nextOccurrence(after: instant, in: calendar.timeZone)!
            let parts = calendar.dateComponents([.hour, .minute], from: instant)
            locals.append("\(parts.hour!):\(parts.minute!)")
        }
        #expect(Set(locals).count == locals.count, "\(locals)")
    }

    /// Compares with croniter (PyPI), an independent implementation, over random expressions
    /// and start times, in UTC and in zones with and without daylight saving.
    @Test func agreesWithCroniter() async throws {
        guard (try? await runPython("import croniter")) != nil else {
            // CI installs croniter and must run this comparison; elsewhere it is optional.
            if ProcessInfo.processInfo.environment["CI"] != nil {
                Issue.record("croniter is not installed: pip install croniter")
            }
            return
        }
        var generator = SeededGenerator(seed: 20_261_129)
        func field(_ range: ClosedRange<Int>, names: [String] = []) -> String {
            switch Int.random(in: 0..<7, using: &generator) {
            case 0: return "*"
            case 1: return "*/\(Int.random(in: 2...max(2, range.upperBound / 2), using: &generator))"
            // croniter expands a degenerate `a-a/n` like `*/n`: ranges here always have a < b.
            case 2:
                let a = Int.random(in: range.lowerBound..<range.upperBound, using: &generator)
                return "\(a)-\(Int.random(in: (a + 1)...range.upperBound, using: &generator))"
            case 3:
                let a = Int.random(in: range.lowerBound..<range.upperBound, using: &generator)
                let b = Int.random(in: (a + 1)...range.upperBound, using: &generator)
                return "\(a)-\(b)/\(Int.random(in: 1...3, using: &generator))"
            case 4:
                return (0..<Int.random(in: 2...4, using: &generator)).map { _ in String(Int.random(in: range, using: &generator)) }.joined(
                    separator: ",")
            case 5 where !names.isEmpty: return names[Int.random(in: 0..<names.count, using: &generator)]
            default: return String(Int.random(in: range, using: &generator))
            }
        }
        let zones = ["UTC", "Asia/Kolkata", "America/New_York", "Europe/Berlin", "Australia/Sydney"]
        var cases: [[String: Any]] = []
        for _ in 0..<2000 {
            let expression = [
                field(0...59), field(0...23), field(1...28), field(1...12, names: ["jan", "jun", "dec"]), field(0...6, names: ["mon", "fri", "sun"]),
            ].joined(separator: " ")
            let start = 1_767_225_600 + Int.random(in: 0..<(2 * 365 * 86_400), using: &generator)  // 2026–2027
            cases.append(["expression": expression, "zone": zones[Int.random(in: 0..<zones.count, using: &generator)], "start": start])
        }
        let input = FileManager.default.temporaryDirectory.appendingPathComponent("cron-\(UUID().uuidString).json")
        try JSONSerialization.data(withJSONObject: cases).write(to: input)
        let output = String(
            decoding: try await runPython(
                """
                import json, sys, datetime, zoneinfo
                from croniter import croniter
                out = []
                for case in json.load(open(sys.argv[1])):
                    zone = zoneinfo.ZoneInfo(case["zone"])
                    start = datetime.datetime.fromtimestamp(case["start"], zone)
                    try:
                        nxt = croniter(case["expression"], start).get_next(datetime.datetime)
                        out.append(int(nxt.timestamp()))
                    except Exception as error:
                        out.append(None)
                print(json.dumps(out))
                """, [input.path]), as: UTF8.self)
        let expected = try JSONSerialization.jsonObject(with: Data(output.utf8)) as! [Any]
        var compared = 0
        var mismatches: [String] = []
        for (index, item) in cases.enumerated() {
            guard let want = expected[index] as? Int else { continue }
            let zone = TimeZone(identifier: item["zone"] as! String)!
            let start = Date(timeIntervalSince1970: Double(item["start"] as! Int))
            guard let got = try CronExpression(item["expression"] as! String).nextOccurrence(after: start, in: zone) else {
                mismatches.append("\(item): nil, croniter \(want)")
                continue
            }
            // Around a daylight-saving change croniter's own handling differs between versions;
            // those dates are covered by the explicit DST test above.
            if zone.daylightSavingTimeOffset(for: start) != zone.daylightSavingTimeOffset(for: got) { continue }
            compared += 1
            if Int(got.timeIntervalSince1970) != want { mismatches.append("\(item): got \(Int(got.timeIntervalSince1970)), croniter \(want)") }
        }
        #expect(compared > 1500)
        #expect(mismatches.isEmpty, "\(mismatches.prefix(10))")
    }
}
