package import Foundation

extension Migration {
    /// The migrations kept as SQL files in a module's resource bundle (`.copy("Migrations")` in
    /// Package.swift): `Migrations/<module>/<version>_<slug>.sql`, e.g. `Migrations/tasks/0001_tasks.sql`.
    /// The folder names the module and the leading number the version, the key `cairn_migrations`
    /// records; the first line, `-- name: …`, is the description recorded beside it. Statements
    /// end with `;` and run in order on both engines; comments are dropped.
    /// - Throws: `StorageError` `migration_files` naming the file or folder at fault: no folder,
    ///   a file not so named, no name line, no statement, or versions that are not 1, 2, 3, … .
    package static func files(in bundle: Bundle) throws -> [Migration] {
        guard let root = bundle.url(forResource: "Migrations", withExtension: nil) else {
            throw StorageError(code: "migration_files", message: "no Migrations folder in \(bundle.bundlePath)")
        }
        var migrations: [Migration] = []
        for module in try FileManager.default.contentsOfDirectory(atPath: root.path).sorted() where !module.hasPrefix(".") {
            migrations += try files(module: module, in: root.appendingPathComponent(module))
        }
        return migrations
    }

    /// One module's folder, in version order.
    static func files(module: String, in folder: URL) throws -> [Migration] {
        var migrations: [Migration] = []
        for file in try FileManager.default.contentsOfDirectory(atPath: folder.path) where file.hasSuffix(".sql") {
            let path = "\(module)/\(file)"
            let digits = file.prefix { $0.isASCII && $0.isNumber }
            guard let version = Int(digits), file.dropFirst(digits.count).hasPrefix("_") else {
                throw StorageError(code: "migration_files", message: "\(path): the name must be <version>_<slug>.sql")
            }
            let text = try String(contentsOf: folder.appendingPathComponent(file), encoding: .utf8)
            migrations.append(try Migration(module: module, version: version, file: path, text: text))
        }
        migrations.sort { $0.version < $1.version }
        // A missing or doubled file would skip or shadow a migration without a word.
        for (index, migration) in migrations.enumerated() where migration.version != index + 1 {
            throw StorageError(
                code: "migration_files", message: "\(module): version \(migration.version) where \(index + 1) was expected (versions run 1, 2, 3, …)")
        }
        return migrations
    }

    /// A migration from one file's text (`file` names it in errors).
    init(module: String, version: Int, file: String, text: String) throws {
        let firstLine = text.prefix { !$0.isNewline }
        let name = firstLine.hasPrefix("-- name:") ? firstLine.dropFirst(8).trimmingCharacters(in: .whitespaces) : ""
        guard !name.isEmpty else {
            throw StorageError(code: "migration_files", message: "\(file): the first line must be `-- name: <description>`")
        }
        let statements = SQLScript.statements(in: text)
        guard !statements.isEmpty else {
            throw StorageError(code: "migration_files", message: "\(file): no SQL statement")
        }
        self.init(module: module, version: version, name: name, sql: statements)
    }
}

/// Splits a SQL script into statements: at each `;` outside quotes and comments, and inside a
/// `CREATE TRIGGER` only at the `;` after its `END`. Comments (`--`, `/* */`) are dropped, and
/// white space around each statement. Enough for migrations; not a SQL parser.
package enum SQLScript {
    /// The statements of `text`, without their final `;`.
    package static func statements(in text: String) -> [String] {
        var statements: [String] = []
        var current = ""
        var scalars = text.unicodeScalars[...]
        while let scalar = scalars.popFirst() {
            switch scalar {
            case "'", "\"":
                // A quoted string or identifier, as written; a doubled quote stays inside it.
                current.unicodeScalars.append(scalar)
                while let next = scalars.popFirst() {
                    current.unicodeScalars.append(next)
                    if next == scalar { break }
                }
            case "-" where scalars.first == "-":
                while let next = scalars.first, next != "\n" { scalars.removeFirst() }
            case "/" where scalars.first == "*":
                scalars.removeFirst()
                while let next = scalars.popFirst(), !(next == "*" && scalars.first == "/") {}
                _ = scalars.popFirst()
                current += " "
            case ";" where !endsInsideTrigger(current):
                append(current, to: &statements)
                current = ""
            default:
                current.unicodeScalars.append(scalar)
            }
        }
        append(current, to: &statements)
        return statements
    }

    /// True while `statement` is a `CREATE TRIGGER` whose body has not reached `END`.
    static func endsInsideTrigger(_ statement: String) -> Bool {
        let words = statement.uppercased().split { !($0.isLetter || $0.isNumber || $0 == "_") }
        let prefix = words.prefix(3).filter { $0 != "TEMP" && $0 != "TEMPORARY" }
        return prefix.starts(with: ["CREATE", "TRIGGER"]) && words.last != "END"
    }

    static func append(_ statement: String, to statements: inout [String]) {
        let trimmed = statement.trimmingCharacters(in: .whitespacesAndNewlines)
        if !trimmed.isEmpty { statements.append(trimmed) }
    }
}
