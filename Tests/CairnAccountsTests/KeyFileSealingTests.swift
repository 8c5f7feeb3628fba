import CairnAccounts
import CairnHTTP
import CairnStorage
import CairnTestSupport
import Crypto
import Foundation
import Testing

/// The single node's `jwt-keys.json` (SQLite): private signing keys sealed under the master
/// key like every other secret at rest, a plain file from before migrated on start, re-sealed
/// by `cairn keys rotate-master`, and a wrong master key refused.
@Suite("Signing key file sealed under the master key")
struct KeyFileSealingTests {
    static func box() -> SecretBox { SecretBox(master: MasterKey.generate()) }

    /// A fresh key file path in a folder of its own (removed by the caller).
    static func keyFile() throws -> String {
        let folder = NSTemporaryDirectory() + "cairn-keyfile-" + UUID().uuidString
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        return folder + "/jwt-keys.json"
    }

    static func settings(_ path: String, _ box: SecretBox?) -> TokenSettings {
        var settings = TokenSettings(keyFile: path)
        settings.keyFileSecrets = box
        return settings
    }

    /// The private keys as the file stores them.
    static func storedKeys(_ path: String) throws -> [String] {
        let ring = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: path))) as? [String: Any]
        return (ring?["keys"] as? [[String: Any]] ?? []).compactMap { $0["privateKey"] as? String }
    }

    /// Signs a token and verifies it with the same service.
    static func roundTrip(_ service: TokenService) async throws -> String {
        let token = try await service.issueAccessToken(userId: UUIDv7.make(), tenantId: UUIDv7.make(), role: .owner, sessionId: UUIDv7.make()).token
        _ = try await service.verify(token)
        return token
    }

    @Test func aNewFileHoldsNoPrivateKeyInPlainText() async throws {
        let path = try Self.keyFile()
        defer { try? FileManager.default.removeItem(atPath: (path as NSString).deletingLastPathComponent) }
        let box = Self.box()
        let service = try await TokenService(settings: Self.settings(path, box))
        _ = try await Self.roundTrip(service)
        let stored = try Self.storedKeys(path)
        #expect(stored.count == 1)
        #expect(stored.allSatisfy(SecretBox.isSealed), "\(stored)")
        let privateKey = try box.open(try #require(stored.first), purpose: "signing.key")
        let bytes = try Data(contentsOf: URL(fileURLWithPath: path))
        #expect(bytes.range(of: Data(privateKey.utf8)) == nil, "the file holds the private key")
        #expect(bytes.range(of: try #require(Data(base64Encoded: privateKey))) == nil)
        // A rotation keeps the file sealed, and the node reads it back.
        _ = try await TokenService.rotate(Self.settings(path, box))
        #expect(try Self.storedKeys(path).count == 2 && Self.storedKeys(path).allSatisfy(SecretBox.isSealed))
        _ = try await Self.roundTrip(try await TokenService(settings: Self.settings(path, box)))
    }

    /// A file written before sealing existed is rewritten sealed on start, and its key still
    /// signs: tokens issued before the upgrade stay valid.
    @Test func aPlainFileFromBeforeIsSealedOnStart() async throws {
        let path = try Self.keyFile()
        defer { try? FileManager.default.removeItem(atPath: (path as NSString).deletingLastPathComponent) }
        let key = Curve25519.Signing.PrivateKey()
        let plain = key.rawRepresentation.base64EncodedString()
        let legacy: [String: Any] = ["keys": [["kid": "ed25519-legacy", "privateKey": plain, "createdAt": 1_700_000_000_000]]]
        try JSONSerialization.data(withJSONObject: legacy).write(to: URL(fileURLWithPath: path))
        let before = try await Self.roundTrip(try await TokenService(settings: Self.settings(path, nil)))

        let box = Self.box()
        let service = try await TokenService(settings: Self.settings(path, box))
        let stored = try Self.storedKeys(path)
        #expect(stored.count == 1 && stored.allSatisfy(SecretBox.isSealed), "\(stored)")
        #expect(try Data(contentsOf: URL(fileURLWithPath: path)).range(of: Data(plain.utf8)) == nil)
        let attributes = try FileManager.default.attributesOfItem(atPath: path)
        #expect((attributes[.posixPermissions] as? NSNumber)?.intValue == 0o600)
        _ = try await service.verify(before)
        #expect(service.jwks.first?["kid"] == "ed25519-legacy")
        #expect(service.jwks.first?["x"] == Base64URL.encode(key.publicKey.rawRepresentation))
    }

    /// `cairn keys rotate-master`'s step for the file: re-sealed under the new key, which opens
    /// it; the old key no longer does, and says so as a master key problem (exit 2).
    @Test func rotateMasterResealsTheFileAndTheWrongKeyIsRefused() async throws {
        let path = try Self.keyFile()
        defer { try? FileManager.default.removeItem(atPath: (path as NSString).deletingLastPathComponent) }
        let old = Self.box()
        let token = try await Self.roundTrip(try await TokenService(settings: Self.settings(path, old)))
        let before = try Self.storedKeys(path)

        let new = Self.box()
        #expect(try TokenService.resealKeyFile(Self.settings(path, old), from: old, to: new) == 1)
        let after = try Self.storedKeys(path)
        #expect(after.allSatisfy(SecretBox.isSealed) && after != before)
        let service = try await TokenService(settings: Self.settings(path, new))
        _ = try await service.verify(token)

        await #expect(throws: MasterKeyError.self) { _ = try await TokenService(settings: Self.settings(path, old)) }
        await #expect(throws: MasterKeyError.self) { _ = try await TokenService(settings: Self.settings(path, Self.box())) }
    }
}
