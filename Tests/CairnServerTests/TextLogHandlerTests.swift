import CairnServer
import Logging
import Synchronization
import Testing

/// Collects written lines.
private final class Lines: TextOutputStream, Sendable {
    let all = Mutex<[String]>([])
    func write(_ string: String) { all.withLock { $0.append(string) } }
}

/// Counts how often its text is formatted.
private final class Counted: CustomStringConvertible, Sendable {
    let calls = Atomic<Int>(0)
    var description: String {
        calls.add(1, ordering: .relaxed)
        return "counted"
    }
}

@Suite("Text log lines")
struct TextLogHandlerTests {
    /// Setting metadata formats nothing (the middlewares set three keys on every authenticated
    /// request); a written line carries it all, in `StreamLogHandler`'s format.
    @Test func metadataIsFormattedOnlyWhenALineIsWritten() {
        let lines = Lines()
        let counted = Counted()
        var logger = Logger(label: "cairn.test") { label in TextLogHandler(label: label, stream: lines) }
        logger.logLevel = .info
        logger[metadataKey: "request_id"] = .stringConvertible(counted)
        logger[metadataKey: "user_id"] = "u1"
        logger[metadataKey: "tenant_id"] = "t1"
        logger.debug("below the level: not written")
        #expect(counted.calls.load(ordering: .relaxed) == 0)
        logger.warning("written")
        #expect(counted.calls.load(ordering: .relaxed) == 1)
        let written = lines.all.withLock { $0 }
        #expect(written.count == 1)
        #expect(written.first?.hasSuffix(" warning cairn.test: request_id=counted tenant_id=t1 user_id=u1 [CairnServerTests] written\n") == true)
    }
}
