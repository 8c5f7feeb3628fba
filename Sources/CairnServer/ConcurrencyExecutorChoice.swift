package import Foundation

/// Where a node's Swift tasks run, decided before any of them starts (the choice cannot change
/// once tasks run): on SwiftNIO's event loops, which then also serve as Swift concurrency's
/// global executor, or on the Swift runtime's own cooperative pool.
///
/// `CAIRN_CONCURRENCY_EXECUTOR` is `nio`, `swift` or `auto` (the default). `auto` takes the event
/// loops on embedded SQLite, where a request's handler then reads on the thread that received it
/// (about 20 % less CPU per `GET /tasks`), and keeps the runtime's pool on PostgreSQL, where the
/// event loops measured no better and `GET /tasks?limit=20` about 15 % slower: there a
/// request's work overlaps its wait for the database on the pool's threads.
package enum ConcurrencyExecutorChoice {
    /// True to install NIO's event loops as the global executor.
    ///
    /// - Parameters:
    ///   - arguments: the command line (`--database-url` and `--config`, as `cairn` reads them).
    ///   - environment: the process environment (`CAIRN_CONCURRENCY_EXECUTOR`,
    ///     `CAIRN_DATABASE_URL`, `CAIRN_CONFIG_FILE`).
    ///   - readFile: reads the configuration file; a file that cannot be read or parsed counts
    ///     as naming PostgreSQL (the safe choice: start-up reports the file itself).
    package static func usesEventLoops(
        arguments: [String], environment: [String: String], readFile: (String) -> Foundation.Data? = { FileManager.default.contents(atPath: $0) }
    ) -> Bool {
        switch environment["CAIRN_CONCURRENCY_EXECUTOR"]?.lowercased() {
        case "nio": return true
        case "swift": return false
        default: break
        }
        if let url = value(of: "--database-url", in: arguments) ?? environment["CAIRN_DATABASE_URL"] { return url.isEmpty }
        guard let file = value(of: "--config", in: arguments) ?? environment["CAIRN_CONFIG_FILE"] else { return true }
        guard let data = readFile(file), let object = try? JSONSerialization.jsonObject(with: data) as? [String: Any] else { return false }
        let url = (object["database"] as? [String: Any])?["url"] ?? object["database.url"]
        return (url as? String).map(\.isEmpty) ?? (url == nil)
    }

    /// The value of `--name value` or `--name=value`; the last one wins, as in ArgumentParser.
    static func value(of name: String, in arguments: [String]) -> String? {
        var found: String?
        var index = arguments.startIndex
        while index < arguments.endIndex {
            let argument = arguments[index]
            if argument == "--" { break }
            if argument == name, index + 1 < arguments.endIndex {
                found = arguments[index + 1]
                index += 1
            } else if argument.hasPrefix(name + "=") {
                found = String(argument.dropFirst(name.count + 1))
            }
            index += 1
        }
        return found
    }
}
