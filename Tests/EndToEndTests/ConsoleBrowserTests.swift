import CairnTestSupport
import Foundation
import Testing

/// Where the browser suite finds its parts: Debian's Chromium and chromedriver (or
/// `CHROMIUM`/`CHROMEDRIVER`), and Selenium for Python.
enum ConsoleBrowser {
    /// This process's environment.
    static let environment = ProcessInfo.processInfo.environment
    /// The browser.
    static let chromium = environment["CHROMIUM"] ?? "/usr/bin/chromium"
    /// The WebDriver server for it.
    static let chromedriver = environment["CHROMEDRIVER"] ?? "/usr/bin/chromedriver"
    /// CI must run the suite: there a missing browser is a failure, not a skip.
    static let required = environment["CI"] != nil
    /// True when both executables are there.
    static let browserPresent =
        FileManager.default.isExecutableFile(atPath: chromium) && FileManager.default.isExecutableFile(atPath: chromedriver)
    /// The Selenium script (scripts/console-browser-test.py).
    static let script = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("scripts/console-browser-test.py").path
}

/// The console in a real Chromium (issue 15), against the real binary: sign in, a tus upload
/// of flights.csv to 100%, a pipeline run with a moving progress bar and its result table, a
/// live notification, a dead letter retried, sign-out without the refresh cookie; no console
/// errors or CSP violations. The script prints where its screenshots are.
@Suite(
    "End to end: the console in Chromium", .serialized,
    .enabled(
        if: ConsoleBrowser.browserPresent || ConsoleBrowser.required,
        "Chromium and chromedriver are missing (apt-get install chromium chromium-driver); CI installs them and runs this suite"))
struct ConsoleBrowserTests {
    @Test(arguments: E2EEngine.available)
    func theConsoleScenarioPassesInChromium(engine: E2EEngine) async throws {
        let selenium = try await runChild("/usr/bin/env", ["python3", "-c", "import selenium"])
        if selenium.status != 0 {
            if ConsoleBrowser.required { throw E2EError("selenium is missing: pip install selenium") }
            print("skipped: selenium for Python is missing (pip install selenium)")
            return
        }
        let dataDir = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dataDir) }
        let server = try await ServerProcess.start(dataDir: dataDir, environment: try await engine.environment())
        let shots = ConsoleBrowser.environment["CAIRN_CONSOLE_SCREENSHOTS"].map { "\($0)/\(engine.rawValue)" } ?? dataDir + "-screenshots"
        let result = try await runChild(
            "/usr/bin/env",
            ["python3", ConsoleBrowser.script, server.baseURL, sharedData + "/flights.csv.gz", shots],
            environment: ConsoleBrowser.environment.merging(["CHROMIUM": ConsoleBrowser.chromium, "CHROMEDRIVER": ConsoleBrowser.chromedriver]) { $1 }
        )
        print("console screenshots (\(engine.rawValue)): \(shots)")
        #expect(result.status == 0, "\(result.text)\n\(result.errorText.suffix(4000))\nserver log:\n\(server.output.suffix(3000))")
        #expect(try await server.stop() == 0)
    }
}
