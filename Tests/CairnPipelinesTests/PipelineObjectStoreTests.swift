import CairnFiles
import CairnObjects
import CairnServer
import CairnTestSupport
import Foundation
import Testing

@Suite("Pipelines: input and output through the object store")
struct PipelineObjectStoreTests {
    /// A run on the S3 store reads its input from the bucket and writes its output there: the
    /// rows are right, the output is an object of the bucket, and no blob is on the node's disk.
    @Test(arguments: TestEngine.available)
    func aRunReadsAndWritesThroughTheBucket(engine: TestEngine) async throws {
        guard TestBlobBackend.available.contains(.s3) else { return }
        let configure = try await TestBlobBackend.s3.configure()
        try await withPipelines(engine, configure: configure) { tenant, _, components in
            let bytes = try [UInt8](Data(contentsOf: URL(fileURLWithPath: "\(sharedData)/penguins.csv")))
            let lines = String(decoding: bytes, as: UTF8.self).split(whereSeparator: \.isNewline).count
            let file = try await tenant.upload(bytes)
            let job = try await tenant.run(
                try await tenant.create(pipelineBody("SELECT species, count(*) AS n FROM input GROUP BY species ORDER BY species")), fileId: file)
            #expect(job["state"] as? String == "succeeded", "\(job)")
            let rows = try await tenant.rows(of: job)
            #expect(rows.count == 3)
            #expect(rows.reduce(0) { $0 + ($1["n"] as? Int ?? 0) } == lines - 1)
            let output = try #require((job["result"] as? [String: Any])?["outputFileId"] as? String)
            let store = try #require((components.blobs as? MeteredBlobStore)?.base as? S3BlobStore)
            let keys = try await store.listAll().map(\.key)
            #expect(keys.contains { $0.hasSuffix("/" + file) } && keys.contains { $0.hasSuffix("/" + output) }, "\(keys)")
            let onDisk = FileManager.default.enumerator(atPath: components.configuration.dataDir + "/blobs")?.allObjects ?? []
            #expect(onDisk.isEmpty)
        }
    }
}
