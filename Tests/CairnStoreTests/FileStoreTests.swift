import CairnFiles
import CairnHTTP
import CairnServer
import CairnStorage
import CairnTestSupport
import Foundation
import Testing

@Suite("FileStore and UploadStore on both engines")
struct FileStoreTests {
    func quotas(total: Int64 = 1 << 40, perHour: Int64 = 1 << 40) -> FileQuotas {
        var quotas = FileQuotas()
        quotas.maxTotalBytes = total
        quotas.maxBytesPerHour = perHour
        return quotas
    }

    // MARK: Files

    @Test(arguments: TestEngine.available)
    func aFileReadsBackOnlyInItsTenant(engine: TestEngine) async throws {
        try await withStore(engine, FileStore.init) { store, tenant, other, database in
            let file = try await Factory.file(
                on: database, tenant: tenant, name: "orders.ndjson", size: 42, format: "ndjson", contentType: "application/x-ndjson",
                createdBy: "someone")
            #expect(try await store.get(id: file.id, tenantId: tenant.id) == file)
            #expect(try await store.get(id: file.id, tenantId: other.id) == nil)
            #expect(try await store.get(id: "not-a-uuid", tenantId: tenant.id) == nil)
            #expect(try await store.list(tenantId: other.id, page: PageRequest()).items.isEmpty)
            #expect(try await store.newest(tenantId: other.id, format: "ndjson", after: nil).isEmpty)
            #expect(try await store.totalBytes(tenantId: other.id) == 0)
            #expect(try await !store.delete(id: file.id, tenantId: other.id))
            #expect(try await store.get(id: file.id, tenantId: tenant.id) == file)
        }
    }

    @Test(arguments: TestEngine.available)
    func filesPageNewestFirst(engine: TestEngine) async throws {
        try await withStore(engine, FileStore.init) { store, tenant, other, database in
            let made = try await rows(5, in: tenant, beside: other) { owner, _ in try await Factory.file(on: database, tenant: owner) }
            try await expectListing(limit: 2, made.reversed().map(\.id), id: \.id) { try await store.list(tenantId: tenant.id, page: $0) }
        }
    }

    @Test(arguments: TestEngine.available)
    func theTotalQuotaRefusesTheFileThatWouldPassIt(engine: TestEngine) async throws {
        try await withStore(engine, FileStore.init) { store, tenant, other, database in
            let limits = quotas(total: 1_000)
            _ = try await Factory.file(on: database, tenant: tenant, size: 600, quotas: limits, hour: 1)
            _ = try await Factory.file(on: database, tenant: tenant, size: 400, quotas: limits, hour: 1)
            do {
                _ = try await Factory.file(on: database, tenant: tenant, size: 1, quotas: limits, hour: 1)
                Issue.record("a file past the total quota was recorded")
            } catch FileStore.QuotaExceeded.total {
            }
            #expect(try await store.totalBytes(tenantId: tenant.id) == 1_000)
            #expect(try await store.list(tenantId: tenant.id, page: PageRequest()).items.count == 2)
            #expect(try await store.uploaded(tenantId: tenant.id, hour: 1) == 1_000)
            // Each tenant has its own total.
            _ = try await Factory.file(on: database, tenant: other, size: 1_000, quotas: limits, hour: 1)
        }
    }

    @Test(arguments: TestEngine.available)
    func theHourlyQuotaCountsUploadsPerHourAndRollsBackARefusal(engine: TestEngine) async throws {
        try await withStore(engine, FileStore.init) { store, tenant, _, database in
            let limits = quotas(perHour: 500)
            _ = try await Factory.file(on: database, tenant: tenant, size: 300, quotas: limits, hour: 7)
            do {
                _ = try await Factory.file(on: database, tenant: tenant, size: 300, quotas: limits, hour: 7)
                Issue.record("a file past the hourly quota was recorded")
            } catch FileStore.QuotaExceeded.hourly {
            }
            // The refused file's bytes are not counted against the hour.
            #expect(try await store.uploaded(tenantId: tenant.id, hour: 7) == 300)
            #expect(try await store.totalBytes(tenantId: tenant.id) == 300)
            _ = try await Factory.file(on: database, tenant: tenant, size: 300, quotas: limits, hour: 8)
            #expect(try await store.uploaded(tenantId: tenant.id, hour: 8) == 300)
            // Files the server makes count towards the total only.
            _ = try await Factory.file(on: database, tenant: tenant, size: 300, quotas: limits, hour: 7, countsAsUpload: false)
            #expect(try await store.uploaded(tenantId: tenant.id, hour: 7) == 300)
            #expect(try await store.totalBytes(tenantId: tenant.id) == 900)
        }
    }

    @Test(arguments: TestEngine.available)
    func uploadsFinishingTogetherCannotPassTheTotalQuota(engine: TestEngine) async throws {
        try await withStore(engine, FileStore.init) { store, tenant, _, database in
            let limits = quotas(total: 1_000)
            let outcomes = await withTaskGroup(of: Bool.self) { group in
                for _ in 0..<12 {
                    group.addTask {
                        do {
                            _ = try await Factory.file(on: database, tenant: tenant, size: 200, quotas: limits)
                            return true
                        } catch {
                            return false
                        }
                    }
                }
                return await group.reduce(into: [Bool]()) { $0.append($1) }
            }
            let total = try await store.totalBytes(tenantId: tenant.id)
            #expect(outcomes.filter { $0 }.count == 5)
            #expect(total == 1_000)
        }
    }

    @Test(arguments: TestEngine.available)
    func newestFilesOfAFormatComeAfterTheLastOneTaken(engine: TestEngine) async throws {
        try await withStore(engine, FileStore.init) { store, tenant, other, database in
            var csv: [StoredFile] = []
            for _ in 0..<4 {
                csv.append(try await Factory.file(on: database, tenant: tenant, format: "csv"))
                _ = try await Factory.file(on: database, tenant: tenant, format: "json")
                _ = try await Factory.file(on: database, tenant: other, format: "csv")
            }
            #expect(try await store.newest(tenantId: tenant.id, format: "csv", after: nil, limit: 2).map(\.id) == [csv[3].id, csv[2].id])
            #expect(try await store.newest(tenantId: tenant.id, format: "csv", after: csv[1].id).map(\.id) == [csv[3].id, csv[2].id])
            #expect(try await store.newest(tenantId: tenant.id, format: "csv", after: csv[3].id).isEmpty)
            #expect(try await store.newest(tenantId: tenant.id, format: "xml", after: nil).isEmpty)
        }
    }

    @Test(arguments: TestEngine.available)
    func deletingAFileFreesItsBytes(engine: TestEngine) async throws {
        try await withStore(engine, FileStore.init) { store, tenant, _, database in
            let limits = quotas(total: 1_000)
            let big = try await Factory.file(on: database, tenant: tenant, size: 800, quotas: limits)
            _ = try await Factory.file(on: database, tenant: tenant, size: 200, quotas: limits)
            #expect(try await store.delete(id: big.id, tenantId: tenant.id))
            #expect(try await !store.delete(id: big.id, tenantId: tenant.id))
            #expect(try await !store.delete(id: "not-a-uuid", tenantId: tenant.id))
            #expect(try await store.totalBytes(tenantId: tenant.id) == 200)
            _ = try await Factory.file(on: database, tenant: tenant, size: 800, quotas: limits)
        }
    }

    // MARK: Uploads

    @Test(arguments: TestEngine.available)
    func anUploadReadsBackOnlyInItsTenant(engine: TestEngine) async throws {
        try await withStore(engine, UploadStore.init) { store, tenant, other, database in
            let upload = try await Factory.upload(on: database, tenant: tenant, length: 5_000, name: "big.xml", format: "xml", createdBy: "u")
            #expect(try await store.get(id: upload.id, tenantId: tenant.id) == upload)
            #expect(try await store.get(id: upload.id, tenantId: other.id) == nil)
            #expect(try await store.get(id: "not-a-uuid", tenantId: tenant.id) == nil)
            #expect(try await store.lease(id: upload.id, tenantId: other.id, offset: 0, token: "t", until: 10, now: 1) == nil)
            #expect(try await store.delete(id: upload.id, tenantId: other.id) == nil)
            #expect(try await store.get(id: upload.id, tenantId: tenant.id) == upload)
            #expect(try await store.delete(id: upload.id, tenantId: tenant.id) == upload)
            #expect(try await store.get(id: upload.id, tenantId: tenant.id) == nil)
            #expect(try await store.delete(id: upload.id, tenantId: tenant.id) == nil)
        }
    }

    /// An upload's lease dies with the node that took it (issue 20: after a `kill -9` mid-PATCH
    /// the upload answered 409 for up to a minute after the restart). On PostgreSQL a live node
    /// keeps its lease from another node, and once its connections are gone (a crash closes
    /// them) the other node takes the lease at once, long before `locked_until`; on SQLite (one
    /// node) a process that opens the database after another closed it takes it at once.
    @Test(arguments: TestEngine.available)
    func aLeaseDiesWithTheNodeThatTookIt(engine: TestEngine) async throws {
        try await withTestDatabase(engine) { test in
            let configuration = test.configuration
            func open() async throws -> Database {
                try await Database.open(url: configuration.databaseURL, sqlitePath: configuration.sqlitePath, logger: testLogger)
            }
            let first = try await open()
            let tenant = try await Factory.tenant(on: first)
            let upload = try await Factory.upload(on: first, tenant: tenant, length: 1_000)
            let now = WallClock.milliseconds()
            let taken = try await UploadStore(database: first).lease(
                id: upload.id, tenantId: tenant.id, offset: 0, token: "first", until: now + 60_000, now: now)
            #expect(taken != nil)
            if engine == .postgres {
                let second = try await open()
                let whileAlive = try? await UploadStore(database: second).lease(
                    id: upload.id, tenantId: tenant.id, offset: 0, token: "second", until: now + 60_000, now: now + 1)
                #expect(whileAlive == nil, "a live node keeps its lease")
                await first.close()
                // PostgreSQL ends the closed session's backend, and its lock, a moment after the close: polled, no event tells.
                let leased = try? await pollFor("the dead node's lease to be free", every: .milliseconds(20), timeout: .seconds(5)) {
                    try await UploadStore(database: second).lease(
                        id: upload.id, tenantId: tenant.id, offset: 0, token: "second", until: now + 60_000, now: now + 2)
                }
                await second.close()
                #expect(leased != nil)
            } else {
                await first.close()
                let second = try await open()
                let leased = try? await UploadStore(database: second).lease(
                    id: upload.id, tenantId: tenant.id, offset: 0, token: "second", until: now + 60_000, now: now + 2)
                await second.close()
                #expect(leased != nil)
            }
        }
    }

    @Test(arguments: TestEngine.available)
    func onePatchAtATimeLeasesAnUploadAtItsCommittedOffset(engine: TestEngine) async throws {
        try await withStore(engine, UploadStore.init) { store, tenant, _, database in
            let upload = try await Factory.upload(on: database, tenant: tenant, length: 1_000)
            let leased = try await store.lease(id: upload.id, tenantId: tenant.id, offset: 0, token: "first", until: 2_000, now: 1_000)
            #expect(leased == upload)
            // A live lease (up to and including its end) keeps a second PATCH out.
            #expect(try await store.lease(id: upload.id, tenantId: tenant.id, offset: 0, token: "second", until: 3_000, now: 2_000) == nil)

            #expect(try await store.commit(id: upload.id, token: "first", offset: 400, until: 2_500))
            #expect(try await !store.commit(id: upload.id, token: "second", offset: 900, until: 2_500))
            #expect(try await store.get(id: upload.id, tenantId: tenant.id)?.offset == 400)
            // Releasing (until 0) lets the next PATCH in, at the committed offset only.
            #expect(try await store.commit(id: upload.id, token: "first", offset: 500, until: 0))
            #expect(try await store.lease(id: upload.id, tenantId: tenant.id, offset: 400, token: "second", until: 3_000, now: 2_600) == nil)
            #expect(try await store.lease(id: upload.id, tenantId: tenant.id, offset: 500, token: "second", until: 3_000, now: 2_600)?.offset == 500)
            #expect(try await !store.commit(id: upload.id, token: "first", offset: 600, until: 0))

            // A lapsed lease is taken over; its holder can no longer commit.
            #expect(try await store.lease(id: upload.id, tenantId: tenant.id, offset: 500, token: "third", until: 9_000, now: 3_001) != nil)
            #expect(try await !store.commit(id: upload.id, token: "second", offset: 700, until: 0))
            #expect(try await store.get(id: upload.id, tenantId: tenant.id)?.offset == 500)
        }
    }

    @Test(arguments: TestEngine.available)
    func aCompletedUploadBecomesItsFileAndTakesNoMorePatches(engine: TestEngine) async throws {
        try await withStore(engine, UploadStore.init) { store, tenant, _, database in
            let upload = try await Factory.upload(on: database, tenant: tenant, length: 300)
            _ = try await store.lease(id: upload.id, tenantId: tenant.id, offset: 0, token: "t", until: 2_000, now: 1_000)
            let files = FileStore(database: database)
            let file = StoredFile(
                id: upload.id, tenantId: tenant.id, name: "done.csv", size: 300, sha256: String(repeating: "0", count: 64),
                contentType: "text/csv", format: "csv", createdBy: "someone", createdAt: 1_500)
            // Recording the file and completing the upload are one transaction: without the
            // lease neither happens.
            await #expect(throws: FileStore.UploadLeaseLost.self) {
                try await files.insert(file, quotas: quotas(), hour: 0, completingUpload: (upload.id, "someone-else"))
            }
            #expect(try await files.get(id: upload.id, tenantId: tenant.id) == nil)
            #expect(try await store.get(id: upload.id, tenantId: tenant.id)?.fileId == nil)
            try await files.insert(file, quotas: quotas(), hour: 0, completingUpload: (upload.id, "t"))
            #expect(try await files.get(id: upload.id, tenantId: tenant.id) == file)
            let done = try #require(try await store.get(id: upload.id, tenantId: tenant.id))
            #expect(done.fileId == upload.id)
            #expect(done.offset == 300)
            #expect(try await store.lease(id: upload.id, tenantId: tenant.id, offset: 300, token: "late", until: 9_000, now: 5_000) == nil)
        }
    }

    @Test(arguments: TestEngine.available)
    func expiryRemovesExpiredUploadsThatNoPatchHolds(engine: TestEngine) async throws {
        try await withStore(engine, UploadStore.init) { store, tenant, other, database in
            let expired = try await Factory.upload(on: database, tenant: tenant, expiresAt: 1_000)
            let theirs = try await Factory.upload(on: database, tenant: other, expiresAt: 1_000)
            let busy = try await Factory.upload(on: database, tenant: tenant, expiresAt: 1_000)
            let live = try await Factory.upload(on: database, tenant: tenant, expiresAt: 10_000)
            _ = try await store.lease(id: busy.id, tenantId: tenant.id, offset: 0, token: "t", until: 5_000, now: 500)

            #expect(try await store.expire(now: 1_000).isEmpty)
            #expect(Set(try await store.expire(now: 2_000).map(\.id)) == [expired.id, theirs.id])
            #expect(try await store.get(id: expired.id, tenantId: tenant.id) == nil)
            #expect(try await store.expire(now: 6_000).map(\.id) == [busy.id])
            #expect(try await store.get(id: live.id, tenantId: tenant.id) == live)

            for _ in 0..<3 { _ = try await Factory.upload(on: database, tenant: tenant, expiresAt: 20_000) }
            #expect(try await store.expire(now: 30_000, limit: 2).count == 2)
            #expect(try await store.expire(now: 30_000, limit: 2).count == 2)
            #expect(try await store.expire(now: 30_000, limit: 2).isEmpty)
        }
    }
}
