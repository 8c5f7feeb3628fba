package import Crypto
package import Foundation
package import SQLKit

/// The master key secrets at rest are sealed under: 32 random bytes kept outside the database,
/// in `CAIRN_MASTER_KEY` (base64) or, for a single node, a generated `master.key` file (mode
/// 0600) in the data directory.
package struct MasterKey: Sendable {
    /// The AES-256 key.
    package let key: SymmetricKey
    /// 8 hex digits naming the key (a digest of it, never the key): written beside every sealed
    /// value, so a value sealed under another key is recognised as such instead of failing as
    /// "corrupt".
    package let id: String

    /// A key from its 32 raw bytes.
    /// - Throws: `MasterKeyError` when `bytes` is not 32 bytes long.
    package init(bytes: some ContiguousBytes) throws {
        let key = SymmetricKey(data: bytes)
        guard key.bitCount == 256 else { throw MasterKeyError("the master key must be 32 bytes") }
        self.init(checked: key)
    }

    /// A key already known to be 256 bits.
    private init(checked key: SymmetricKey) {
        self.key = key
        var material = Data("cairn-master-key-id".utf8)
        key.withUnsafeBytes { material.append(contentsOf: $0) }
        self.id = SHA256.hash(data: material).prefix(4).map { String(format: "%02x", $0) }.joined()
    }

    /// A key from its base64 text (RFC 4648 §4), as `CAIRN_MASTER_KEY` holds it.
    /// - Throws: `MasterKeyError` when the text is not base64 of 32 bytes.
    package init(base64 text: String) throws {
        guard let bytes = Data(base64Encoded: text.trimmingCharacters(in: .whitespacesAndNewlines)), bytes.count == 32 else {
            throw MasterKeyError("the master key must be 32 bytes in base64")
        }
        try self.init(bytes: bytes)
    }

    /// A new random key.
    package static func generate() -> MasterKey {
        MasterKey(checked: SymmetricKey(size: .bits256))
    }

    /// The key as base64 text (for `master.key` and for printing once by `rotate-master`).
    package var base64: String { key.withUnsafeBytes { Data($0).base64EncodedString() } }

    /// Reads the key file at `path`, or creates one with a new key (mode 0600, written to a
    /// temporary file and renamed, so it is never readable by others, not even for a moment).
    /// - Throws: `MasterKeyError` when the file cannot be read or written, or holds no key.
    package static func loadOrCreate(at path: String) throws -> MasterKey {
        if FileManager.default.fileExists(atPath: path) {
            guard let data = FileManager.default.contents(atPath: path), let text = String(data: data, encoding: .utf8) else {
                throw MasterKeyError("cannot read the master key file \(path)")
            }
            do {
                return try MasterKey(base64: text)
            } catch {
                throw MasterKeyError("the master key file \(path) does not hold 32 bytes in base64")
            }
        }
        let key = generate()
        try key.save(to: path)
        return key
    }

    /// Writes the key to `path` with mode 0600, replacing any file there.
    /// - Throws: `MasterKeyError` when it cannot be written.
    package func save(to path: String) throws {
        guard writePrivateFile(Data((base64 + "\n").utf8), to: path) else { throw MasterKeyError("cannot write the master key file \(path)") }
    }
}

/// Writes `data` to a temporary file created with mode 0600, fsyncs it and renames it over
/// `path`, so a secret is never readable by others nor half-written, not even for a moment.
/// - Returns: false when any step failed (the temporary file is then removed).
package func writePrivateFile(_ data: Data, to path: String) -> Bool {
    let temporary = path + ".tmp-\(UUIDv7.make())"
    let descriptor = open(temporary, O_WRONLY | O_CREAT | O_EXCL, 0o600)
    guard descriptor >= 0 else { return false }
    let written = data.withUnsafeBytes { write(descriptor, $0.baseAddress, $0.count) }
    let synced = fsync(descriptor) == 0
    close(descriptor)
    guard written == data.count, synced, rename(temporary, path) == 0 else {
        unlink(temporary)
        return false
    }
    return true
}

/// A master key problem: unreadable, malformed, or not the key this database was sealed with.
/// Its text never contains a key or a secret.
package struct MasterKeyError: Error, CustomStringConvertible, Sendable {
    /// What is wrong.
    package var description: String
    /// Creates the error.
    package init(_ description: String) { self.description = description }
}

/// Seals and opens secrets at rest with AES-256-GCM (NIST SP 800-38D) under the master key.
///
/// Text form: `v1:<key id>:<base64 of nonce (12 bytes) | ciphertext | tag (16 bytes)>`. The
/// `purpose` (e.g. `webhook.secret`) is authenticated as additional data, so a sealed value
/// copied into another column does not open there.
package struct SecretBox: Sendable {
    /// The key values are sealed under.
    package let master: MasterKey

    /// A box over `master`.
    package init(master: MasterKey) {
        self.master = master
    }

    /// Whether `text` is in the sealed form (any key); plaintext rows written before sealing
    /// existed are not (webhook secrets start `whsec_`, provider settings `{`).
    package static func isSealed(_ text: String) -> Bool { text.hasPrefix("v1:") }

    /// Seals `plaintext` for `purpose`.
    package func seal(_ plaintext: String, purpose: String) -> String {
        // AES.GCM.seal fails only for a key of a wrong size, which MasterKey rules out.
        let box = try! AES.GCM.seal(Data(plaintext.utf8), using: master.key, authenticating: Data(purpose.utf8))
        return "v1:\(master.id):" + box.combined!.base64EncodedString()
    }

    /// Opens a value sealed for `purpose`.
    /// - Throws: `MasterKeyError` when the value was sealed under another key, is not in the
    ///   sealed form, or fails authentication.
    package func open(_ sealed: String, purpose: String) throws -> String {
        let parts = sealed.split(separator: ":", maxSplits: 2, omittingEmptySubsequences: false)
        guard parts.count == 3, parts[0] == "v1", let bytes = Data(base64Encoded: String(parts[2])) else {
            throw MasterKeyError("a stored secret (\(purpose)) is not sealed")
        }
        guard parts[1] == master.id else {
            throw MasterKeyError("a stored secret (\(purpose)) is sealed under master key \(parts[1]), not \(master.id)")
        }
        do {
            let plaintext = try AES.GCM.open(AES.GCM.SealedBox(combined: bytes), using: master.key, authenticating: Data(purpose.utf8))
            return String(decoding: plaintext, as: UTF8.self)
        } catch {
            throw MasterKeyError("a stored secret (\(purpose)) does not open under master key \(master.id)")
        }
    }

    /// `text` opened when sealed, as it is otherwise (a plaintext row not yet sealed by the
    /// start-up step).
    /// - Throws: `MasterKeyError` as ``open(_:purpose:)``.
    package func openOrPlain(_ text: String, purpose: String) throws -> String {
        Self.isSealed(text) ? try open(text, purpose: purpose) : text
    }

    /// Opens a value sealed under `old` and seals it under this box's key (for
    /// `cairn keys rotate-master`).
    /// - Throws: `MasterKeyError` when it does not open under `old`.
    package func reseal(_ text: String, purpose: String, from old: SecretBox) throws -> String {
        seal(try old.openOrPlain(text, purpose: purpose), purpose: purpose)
    }
}

/// The canary that tells a node started with the wrong master key: one row in
/// `cairn_master_key` holding a value sealed under the key the database's secrets use.
package enum MasterKeyCheck {
    static let purpose = "cairn.canary"
    static let canary = "cairn master key canary"

    /// Checks `box`'s key against the canary, writing the canary on a database that has none.
    /// - Throws: `MasterKeyError` (one line, no secret) when the database was sealed under
    ///   another key.
    package static func verify(_ box: SecretBox, on database: Database) async throws {
        let stored = try await database.write { db -> String? in
            if let row = try await db.raw("SELECT canary FROM cairn_master_key WHERE id = 1").first() {
                return try row.decode(column: "canary", as: String.self)
            }
            try await db.raw(
                "INSERT INTO cairn_master_key (id, canary) VALUES (1, \(bind: box.seal(canary, purpose: purpose))) ON CONFLICT (id) DO NOTHING"
            ).run()
            return try await db.raw("SELECT canary FROM cairn_master_key WHERE id = 1").first()?.decode(column: "canary", as: String.self)
        }
        guard let stored else { return }
        guard (try? box.open(stored, purpose: purpose)) == canary else {
            let storedId = stored.split(separator: ":").dropFirst().first.map(String.init) ?? "?"
            throw MasterKeyError(
                "wrong master key: this database's secrets are sealed under master key \(storedId), this node has \(box.master.id) (CAIRN_MASTER_KEY or <data dir>/master.key)"
            )
        }
    }

    /// Replaces the canary with one sealed under `box` (inside `cairn keys rotate-master`'s
    /// transaction).
    package static func reseal(_ box: SecretBox, on db: any SQLDatabase) async throws {
        try await db.raw("UPDATE cairn_master_key SET canary = \(bind: box.seal(canary, purpose: purpose)) WHERE id = 1").run()
    }
}

/// CairnStorage's own tables: `cairn_master_key`, the master key canary (see ``MasterKeyCheck``), in `Migrations/storage/*.sql`.
package enum StorageMigrations {
    /// All migrations of the module, in order.
    package static func all() throws -> [Migration] { try Migration.files(in: .module) }
}
