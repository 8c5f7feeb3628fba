import CairnFuzz
import CairnTestSupport
import Foundation
import Testing

/// Replays the checked-in fuzz corpora and every regression input (issue 13) through the same
/// dispatch the libFuzzer binary uses, so a crash once found stays fixed in plain builds.
@Suite(.dedicatedThreads) struct FuzzReplayTests {
    /// `Fuzz/` at the package root: the working directory's (tests run from the package root),
    /// else the one beside this source file.
    static let fuzzRoot: String = {
        let here = FileManager.default.currentDirectoryPath + "/Fuzz"
        if FileManager.default.fileExists(atPath: here + "/corpus") { return here }
        return URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().appendingPathComponent("Fuzz").path
    }()

    @Test(arguments: ["corpus", "regressions"])
    func replaysEveryInput(_ folder: String) async throws {
        // On a thread of its own: the bearer target blocks its thread while the token service
        // runs as a task, which must not starve the cooperative pool the tests share.
        let root = Self.fuzzRoot + "/" + folder
        let counts = try await withCheckedThrowingContinuation { continuation in
            Thread { continuation.resume(with: Result { try FuzzTarget.replay(root: root) }) }.start()
        }
        if folder == "corpus" {
            // Every target has seeds.
            #expect(Set(counts.keys) == Set(FuzzTarget.allCases))
        }
        #expect(counts.values.allSatisfy { $0 > 0 })
    }
}
