import CairnTestSupport
import Foundation
import Testing

@Suite("End to end: resource bundles")
struct ResourceBundlesEndToEndTests {
    /// A binary installed without the `Cairn_*.resources` folders beside it stops with one line
    /// naming them (exit 1) before it touches the data directory. Before, it found them in the
    /// build folder it was built in, or trapped in SwiftPM's bundle accessor where there was none.
    @Test func aBinaryWithoutItsResourceBundlesSaysWhichAreMissing() async throws {
        let binary = URL(fileURLWithPath: try cairnBinary())
        // A hard link: the same binary in a folder without the bundles (a symbolic link would
        // run from the build folder). Beside `.build/debug`, so on the same file system.
        let folder = binary.deletingLastPathComponent().deletingLastPathComponent().appendingPathComponent("no-bundles-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: folder) }
        let installed = folder.appendingPathComponent("cairn")
        try FileManager.default.linkItem(at: binary, to: installed)
        let dataDir = try temporaryDirectory()

        let result = try await runChild(installed.path, ["migrate", "--data-dir", dataDir], environment: cairnEnvironment([:]), input: Data())
        #expect(result.status == 1)
        #expect(result.errorText.hasPrefix("cairn: missing beside \(folder.path): Cairn_CairnStorage.resources, Cairn_CairnHTTP.resources"))
        #expect(result.errorText.contains("Cairn_CairnServer.resources (copy the build's Cairn_*.resources folders next to the binary)"))
        #expect(try FileManager.default.contentsOfDirectory(atPath: dataDir).isEmpty)
    }
}
