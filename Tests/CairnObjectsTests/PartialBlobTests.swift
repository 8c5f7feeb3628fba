import CairnObjects
import CairnTestSupport
import Foundation
import NIOCore
import Testing

/// The "database" of a partial blob in these tests: the last state committed, and a commit
/// that fails on a chosen call (a node dying between two steps).
actor Ledger {
    var state = PartialBlob()
    var calls = 0
    var failOnCall: Int?

    func record(_ new: PartialBlob) throws {
        calls += 1
        if calls == failOnCall { throw BodyFailure() }
        state = new
    }

    func failing(onCall call: Int?) {
        calls = 0
        failOnCall = call
    }
}

/// Unfinished blobs (tus uploads' bytes) on both backends: appends from any committed state,
/// crashes between any two steps, completion and removal.
@Suite struct PartialBlobTests {
    let tenant = "0190a0b0-0000-7000-8000-000000000002"

    static let content = patternBytes(0..<(12 << 20), multiplier: 7, shift: 11)

    /// Appends `bytes` from the ledger's state; `persist` false stops before anything is made
    /// durable (a node killed mid-PATCH).
    static func append(
        _ store: any BlobStore, tenant: String, id: String, ledger: Ledger, _ bytes: ArraySlice<UInt8>, persist: Bool = true
    ) async throws {
        let state = await ledger.state
        try await store.appendPartial(tenantId: tenant, id: id, from: state, commit: { try await ledger.record($0) }) { writer in
            #expect(writer.written == state.size)
            var rest = bytes
            while !rest.isEmpty {
                let chunk = rest.prefix(1 << 20)
                try await writer.write(ByteBuffer(bytes: chunk))
                rest = rest.dropFirst(chunk.count)
            }
            if persist { try await writer.persist(all: true) }
        }
    }

    /// A part sent but never committed, and a tail written before its commit failed, leave the
    /// blob at its committed state: the appends that follow, and completion, give exactly the
    /// bytes sent; removal then leaves nothing.
    @Test(arguments: TestBlobBackend.available)
    func crashesBetweenStepsNeverCorruptTheBlob(backend: TestBlobBackend) async throws {
        let store = try await backend.makeStore(partSize: 5 << 20)
        let id = UUID().uuidString.lowercased()
        let ledger = Ledger()
        let content = Self.content
        // 3 MiB: a tail.
        try await Self.append(store, tenant: tenant, id: id, ledger: ledger, content[0..<(3 << 20)])
        #expect(await ledger.state.size == 3 << 20)
        // 4 MiB of other bytes, a node killed before committing them: on S3 a 5 MiB part was
        // sent (its multipart upload committed), on the file system the file grew.
        let garbage = [UInt8](repeating: 0xEE, count: 4 << 20)
        try await Self.append(store, tenant: tenant, id: id, ledger: ledger, garbage[...], persist: false)
        #expect(await ledger.state.size == 3 << 20)
        // The right bytes at the same offset; on S3 the node dies after committing the part
        // (which replaces the uncommitted one) and writing the new tail, before its commit.
        await ledger.failing(onCall: backend == .s3 ? 2 : nil)
        let persisted: Void? = try? await Self.append(store, tenant: tenant, id: id, ledger: ledger, content[(3 << 20)..<(8 << 20)])
        await ledger.failing(onCall: nil)
        let durable = await ledger.state
        if backend == .s3 {
            #expect(persisted == nil)
            #expect(durable.size == 5 << 20 && durable.parts.count == 1, "the part is committed, the tail is not")
        } else {
            #expect(durable.size == 8 << 20)
        }
        // The rest, from whatever was committed.
        try await Self.append(store, tenant: tenant, id: id, ledger: ledger, content[Int(durable.size)...])
        let final = await ledger.state
        #expect(final.size == Int64(content.count))
        #expect(try await store.size(tenantId: tenant, id: id) == nil, "no blob before completion")
        try await store.completePartial(tenantId: tenant, id: id, state: final)
        let blob = try await BlobStoreTests.collect(try await store.read(tenantId: tenant, id: id, range: nil))
        #expect(blob == content, "the blob holds exactly the bytes committed")
        try await store.delete(tenantId: tenant, id: id)
        try await store.removePartial(tenantId: tenant, id: id, multipartId: final.multipartId)
        try await BlobStoreTests.expectNothingLeft(store, tenant: tenant, id: id)
    }

    /// A blob that never fills a part (or holds no byte) completes from its tail alone; removal
    /// of an unfinished one leaves nothing, and appending to a state whose bytes are gone is
    /// refused rather than made up.
    @Test(arguments: TestBlobBackend.available)
    func smallBlobsRemovalAndMissingBytes(backend: TestBlobBackend) async throws {
        let store = try await backend.makeStore(partSize: 5 << 20)
        let (small, empty, removed) = (UUID().uuidString.lowercased(), UUID().uuidString.lowercased(), UUID().uuidString.lowercased())
        let ledger = Ledger()
        try await Self.append(store, tenant: tenant, id: small, ledger: ledger, Self.content[0..<1000])
        try await Self.append(store, tenant: tenant, id: small, ledger: ledger, Self.content[1000..<3000])
        try await store.completePartial(tenantId: tenant, id: small, state: await ledger.state)
        #expect(try await BlobStoreTests.collect(try await store.read(tenantId: tenant, id: small, range: nil)) == Array(Self.content[0..<3000]))
        try await store.delete(tenantId: tenant, id: small)

        let none = Ledger()
        try await Self.append(store, tenant: tenant, id: empty, ledger: none, [])
        try await store.completePartial(tenantId: tenant, id: empty, state: await none.state)
        #expect(try await store.size(tenantId: tenant, id: empty) == 0)
        try await store.delete(tenantId: tenant, id: empty)

        let gone = Ledger()
        try await Self.append(store, tenant: tenant, id: removed, ledger: gone, Self.content[0..<(6 << 20)])
        try await store.removePartial(tenantId: tenant, id: removed, multipartId: await gone.state.multipartId)
        try await BlobStoreTests.expectNothingLeft(store, tenant: tenant, id: removed)
        await #expect(throws: PartialBlobMissing.self) {
            try await Self.append(store, tenant: tenant, id: removed, ledger: gone, Self.content[0..<10])
        }
    }
}
