import CairnStorage
import Foundation
import Testing

/// Sealed secrets (AES-256-GCM under the master key) and the master key file.
@Suite("Storage: sealed secrets")
struct SecretBoxTests {
    @Test
    func sealedValuesOpenOnlyUnderTheirKeyAndPurpose() throws {
        let box = SecretBox(master: MasterKey.generate())
        let sealed = box.seal("whsec_very-secret", purpose: "webhook.secret")
        #expect(sealed.hasPrefix("v1:\(box.master.id):"))
        #expect(!sealed.contains("very-secret"))
        #expect(try box.open(sealed, purpose: "webhook.secret") == "whsec_very-secret")
        // A fresh nonce each time: equal secrets do not give equal rows.
        #expect(box.seal("whsec_very-secret", purpose: "webhook.secret") != sealed)
        #expect(throws: MasterKeyError.self) { try box.open(sealed, purpose: "provider.config") }

        let other = SecretBox(master: MasterKey.generate())
        do {
            _ = try other.open(sealed, purpose: "webhook.secret")
            Issue.record("opened under another key")
        } catch let error as MasterKeyError {
            #expect(error.description.contains(box.master.id))
            #expect(!error.description.contains(box.master.base64) && !error.description.contains(other.master.base64))
        }
        #expect(try other.reseal(sealed, purpose: "webhook.secret", from: box).hasPrefix("v1:\(other.master.id):"))
        #expect(try box.openOrPlain("{\"apiKey\":\"k\"}", purpose: "provider.config") == "{\"apiKey\":\"k\"}")
    }

    @Test
    func theMasterKeyFileIsGeneratedOnceWithMode0600() throws {
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("master-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: folder) }
        let first = try MasterKey.loadOrCreate(at: folder + "/master.key")
        let again = try MasterKey.loadOrCreate(at: folder + "/master.key")
        #expect(first.id == again.id)
        let mode = try FileManager.default.attributesOfItem(atPath: folder + "/master.key")[.posixPermissions] as? NSNumber
        #expect(mode?.intValue == 0o600)
        #expect(throws: MasterKeyError.self) { try MasterKey(base64: Data(count: 16).base64EncodedString()) }
    }
}
