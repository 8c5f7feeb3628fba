import Foundation
import NIOCore
import NIOEmbedded
import NIOWebSocket
import Synchronization
import Testing

@testable import CairnNotifications

@Suite("Notifications: connection mailbox")
struct MailboxTests {
    /// A client that acks every frame of a long replay sends more acks than the flood limit
    /// (64 waiting messages) while the connection is busy sending; acks are cumulative, so they
    /// collapse into the highest one instead of closing the socket with 1008. This was the
    /// flaky close after a 70-frame replay on a loaded machine.
    @Test func cumulativeAcksCollapseInsteadOfFlooding() async {
        let mailbox = Mailbox(capacity: 10)
        for seq in 31...200 { mailbox.push(client: .ack(seq: Int64(seq))) }
        let batch = await mailbox.next()
        #expect(!batch.clientFlood)
        #expect(batch.client.count == 1)
        if case .ack(let seq)? = batch.client.first { #expect(seq == 200) } else { Issue.record("expected one ack") }
    }

    /// Order with other messages is kept, and a real flood of other messages is still one.
    @Test func acksKeepTheirPlaceAndOtherMessagesStillFlood() async {
        let mailbox = Mailbox(capacity: 10)
        mailbox.push(client: .ack(seq: 1))
        mailbox.push(client: .ping)
        mailbox.push(client: .ack(seq: 2))
        mailbox.push(client: .ack(seq: 3))
        let batch = await mailbox.next()
        #expect(batch.client.count == 3)
        if case .ack(let seq)? = batch.client.last { #expect(seq == 3) } else { Issue.record("expected a trailing ack") }
        for _ in 0..<65 { mailbox.push(client: .ping) }
        #expect(await mailbox.next().clientFlood)
    }

    /// A resync request wakes the consumer on its own (the node's LISTEN (re)started).
    @Test func resyncWakesTheConsumer() async {
        let mailbox = Mailbox(capacity: 10)
        mailbox.requestResync()
        let batch = await mailbox.next()
        #expect(batch.resync)
        #expect(batch.rows.isEmpty && !batch.overflowed)
    }
}

/// A live row of user `u` with sequence number `seq`, for the mailbox suites.
private func liveRow(_ seq: Int64) -> LiveRow {
    LiveRow(
        StoredNotification(
            id: "n\(seq)", tenantId: "t", userId: "u", seq: seq, type: "message", title: "", body: "", data: "{}", createdAt: 0, readAt: nil))
}

@Suite("Notifications: mailbox wakes and watchdog")
struct MailboxWakeTests {
    /// Acks set aside ride along with the next wake, the highest one kept.
    @Test func acksSetAsideRideAlongWithTheNextWake() async {
        let mailbox = Mailbox(capacity: 10)
        mailbox.takeAcksAside(wake: false)
        mailbox.push(client: .ack(seq: 3))
        mailbox.push(client: .ack(seq: 5))
        mailbox.push([liveRow(6)])
        let batch = await mailbox.next()
        #expect(batch.acked == 5 && batch.client.isEmpty && batch.rows.map(\.seq) == [6])
    }

    /// A consumer with no task of its own (a pipeline-served socket): what waits is handed over
    /// at once; when nothing does, its callback gets the next batch, once, from the producer.
    @Test func aCallbackConsumerIsWokenOnceWithTheNextBatch() {
        let mailbox = Mailbox(capacity: 10)
        let woken = Mutex<[MailboxBatch]>([])
        mailbox.push([liveRow(1)])
        #expect(mailbox.next { batch in woken.withLock { $0.append(batch) } }?.rows.map(\.seq) == [1])
        #expect(mailbox.next { batch in woken.withLock { $0.append(batch) } } == nil)
        #expect(woken.withLock { $0.isEmpty })
        mailbox.push([liveRow(2)])
        mailbox.push([liveRow(3)])
        #expect(woken.withLock { $0.map { $0.rows.map(\.seq) } } == [[2]])
        #expect(mailbox.next { _ in }?.rows.map(\.seq) == [3])
    }

    /// A consumer whose window is full is woken by an ack, also one set aside just before it asked.
    @Test func aFullWindowIsWokenByAnAck() async {
        let mailbox = Mailbox(capacity: 10)
        mailbox.takeAcksAside(wake: false)
        mailbox.push(client: .ack(seq: 2))
        mailbox.takeAcksAside(wake: true)
        #expect(await mailbox.next().acked == 2)
        mailbox.push(client: .ack(seq: 4))
        #expect(await mailbox.next().acked == 4)
    }

    /// Ticks before the consumer's next check leave it asleep; the first one at or after it wakes it.
    @Test func ticksWakeOnlyWhenACheckIsDue() async {
        let mailbox = Mailbox(capacity: 10)
        let now = ContinuousClock.now
        mailbox.nextCheck(at: now + .seconds(5))
        mailbox.tick(now: now + .seconds(4))
        mailbox.push(client: .ping)
        #expect(await !mailbox.next().ticked)
        mailbox.tick(now: now + .seconds(5))
        let batch = await mailbox.next()
        #expect(batch.ticked && batch.tickedAt == now + .seconds(5))
    }

    /// The watchdog: a write still waiting at a tick past the write timeout, or (when asked) an
    /// overflow during a write, calls `onStall` once; neither happens outside a write.
    @Test func stalledWritesAreReportedOnce() async throws {
        let stalls = Mutex<[Mailbox.Stall]>([])
        let mailbox = Mailbox(capacity: 1, writeTimeout: .zero, stallOnOverflow: true) { reason in stalls.withLock { $0.append(reason) } }
        mailbox.tick()
        mailbox.push([liveRow(1), liveRow(2)])
        #expect(stalls.withLock { $0 }.isEmpty)
        _ = await mailbox.next()
        try await mailbox.writing {
            mailbox.push([liveRow(1), liveRow(2)])
            mailbox.tick()
        }
        #expect(stalls.withLock { $0 } == [.overflow])
        #expect(mailbox.hasStalled)
        let late = Mailbox(capacity: 10, writeTimeout: .zero) { reason in stalls.withLock { $0.append(reason) } }
        try await late.writing { late.tick() }
        #expect(stalls.withLock { $0 } == [.overflow, .writeTimeout])
    }
}

/// A ``DirectWriter`` that records the messages' seqs in the order written.
final class DirectRecorder: Sendable {
    let written = Mutex<[Int64]>([])
    let writable = Atomic<Bool>(true)
    /// Each seq as it is written, for tests that wait for writes made by another task.
    let writes: AsyncStream<Int64>
    private let continuation: AsyncStream<Int64>.Continuation

    init() {
        (writes, continuation) = AsyncStream.makeStream(of: Int64.self)
    }

    /// The `seq` of a notification message.
    static func seq(of message: ByteBuffer) -> Int64 {
        let object = try? JSONSerialization.jsonObject(with: Data(String(buffer: message).utf8)) as? [String: Any]
        return (object?["seq"] as? Int).map(Int64.init) ?? -1
    }

    var writer: DirectWriter {
        DirectWriter(
            isWritable: { self.writable.load(ordering: .relaxed) },
            write: { messages in
                self.written.withLock { written in
                    for message in messages {
                        written.append(Self.seq(of: message))
                        self.continuation.yield(Self.seq(of: message))
                    }
                }
            })
    }
}

@Suite("Notifications: broadcasts written by the hub to sleeping sockets")
struct DirectDeliveryTests {
    /// A caught-up consumer is not woken by live rows that continue its seq: they are written
    /// to its socket in order, and its next wake carries them as sent (for its in-flight
    /// window) ahead of whatever woke it. A row it already has is not written again.
    @Test func rowsThatContinueTheCursorAreWrittenWithoutWakingTheConsumer() async {
        let mailbox = Mailbox(capacity: 10)
        let recorder = DirectRecorder()
        mailbox.takeAcksAside(wake: false)
        mailbox.armDirect(after: 5, room: 10, ackTimeout: .seconds(10), writer: recorder.writer)
        mailbox.push([liveRow(7), liveRow(6)])
        mailbox.push([liveRow(7)])
        mailbox.push([liveRow(8)])
        mailbox.push(client: .ack(seq: 7))
        #expect(recorder.written.withLock { $0 } == [6, 7, 8])
        mailbox.push(client: .ping)
        let batch = await mailbox.next()
        #expect(batch.sent.map(\.seq) == [6, 7, 8])
        #expect(batch.rows.isEmpty && batch.acked == 7 && batch.client.count == 1)
        // Handed a batch, the consumer is awake: rows wake it again instead of being written.
        mailbox.push([liveRow(9)])
        #expect(await mailbox.next().rows.map(\.seq) == [9])
        #expect(recorder.written.withLock { $0 } == [6, 7, 8])
    }

    /// A gap, a full window or a socket that is not writable wakes the consumer with the row
    /// (it reads the store, or parks in its own write under the watchdog), and direct writes
    /// stop until it arms them again.
    @Test func aGapAFullWindowOrAnUnwritableSocketWakesTheConsumer() async {
        let recorder = DirectRecorder()
        let gap = Mailbox(capacity: 10)
        gap.armDirect(after: 5, room: 10, ackTimeout: .seconds(10), writer: recorder.writer)
        gap.push([liveRow(7)])
        gap.push([liveRow(8)])
        #expect(await gap.next().rows.map(\.seq) == [7, 8])
        let full = Mailbox(capacity: 10)
        full.armDirect(after: 5, room: 1, ackTimeout: .seconds(10), writer: recorder.writer)
        full.push([liveRow(6), liveRow(7)])
        #expect(await full.next().rows.map(\.seq) == [6, 7])
        let stuck = Mailbox(capacity: 10)
        recorder.writable.store(false, ordering: .relaxed)
        stuck.armDirect(after: 5, room: 10, ackTimeout: .seconds(10), writer: recorder.writer)
        stuck.push([liveRow(6)])
        recorder.writable.store(true, ordering: .relaxed)
        stuck.push([liveRow(7)])
        #expect(await stuck.next().rows.map(\.seq) == [6, 7])
        #expect(recorder.written.withLock { $0 }.isEmpty)
    }

    /// A session check asked for (a logout, a deletion of the user) stops direct writes at once,
    /// whether the consumer sleeps or has not yet gone back to sleep: rows wait in the mailbox
    /// for the consumer, which makes the check first. Before, the hub kept writing a deleted
    /// user's notifications to the socket until the consumer got round to the check.
    @Test func aPendingSessionCheckStopsDirectWrites() async {
        let recorder = DirectRecorder()
        let sleeping = Mailbox(capacity: 10)
        sleeping.armDirect(after: 5, room: 10, ackTimeout: .seconds(10), writer: recorder.writer)
        sleeping.push([liveRow(6)])
        sleeping.requestAuthCheck()
        #expect(sleeping.authCheckPending)
        sleeping.push([liveRow(7)])
        let batch = await sleeping.next()
        #expect(batch.authCheck && batch.sent.map(\.seq) == [6] && batch.rows.map(\.seq) == [7])
        #expect(!sleeping.authCheckPending)
        // Asked for while the consumer is awake and about to sleep (direct writes armed, its
        // `next` not yet called): nothing is written either.
        let waking = Mailbox(capacity: 10)
        waking.push(client: .ping)
        _ = await waking.next()
        waking.armDirect(after: 5, room: 10, ackTimeout: .seconds(10), writer: recorder.writer)
        waking.requestAuthCheck()
        waking.push([liveRow(6)])
        let next = await waking.next()
        #expect(next.authCheck && next.sent.isEmpty && next.rows.map(\.seq) == [6])
        #expect(recorder.written.withLock { $0 } == [6])
    }

    /// A row written directly is due for a resend an ack timeout later even though the
    /// consumer planned its next check later still: that tick wakes it with the row in flight.
    @Test func anUnackedDirectWriteWakesTheConsumerAtItsAckTimeout() async {
        let mailbox = Mailbox(capacity: 10)
        let recorder = DirectRecorder()
        let start = ContinuousClock.now
        mailbox.nextCheck(at: start + .seconds(60))
        mailbox.armDirect(after: 0, room: 10, ackTimeout: .seconds(10), writer: recorder.writer)
        mailbox.push([liveRow(1)])
        mailbox.tick(now: start + .seconds(11))
        let batch = await mailbox.next()
        #expect(batch.ticked && batch.sent.map(\.seq) == [1])
    }
}

@Suite("Notifications: client message parsing")
struct ClientMessageTests {
    /// The short scanner either agrees with the full JSON parser or leaves the text to it.
    @Test func theFlatScannerAgreesWithTheFullParser() {
        let samples = [
            #"{"type":"ack","seq":42}"#, #" { "seq" : 7 , "type" : "ack" } "#, #"{"type":"subscribe","since":null}"#, #"{"type":"subscribe"}"#,
            #"{"type":"auth","token":"eyJhbGciOi.abc-_"}"#, #"{"type":"ping"}"#, #"{"type":"ack","seq":-3}"#, #"{"type":"ack","seq":-0}"#,
            #"{"type":"ack","seq":123456789012345}"#, #"{}"#, #"{"type":"ack","seq":4.5}"#, #"{"type":"ack","seq":1e2}"#,
            #"{"type":"ack","seq":01}"#, #"{"type":"ack","seq":9007199254740993}"#, #"{"type":"a\u0063k","seq":1}"#,
            #"{"type":"ack","seq":1,"type":"ping"}"#, #"{"type":"ack","seq":true}"#, #"{"type":"ack","seq":[1]}"#, #"{"type":"ack""#,
            #"{"type":"ack",}"#, #"[1]"#, #"{"type":"ack","seq":1} x"#, #"{"type":"é","x":"ü"}"#, "",
        ]
        for sample in samples {
            guard let fast = ClientMessage.flatObject(sample) else { continue }
            #expect(fast == ClientMessage.fullMembers(sample), "\(sample)")
        }
        // The common messages take the scanner.
        #expect(ClientMessage.flatObject(#"{"type":"ack","seq":42}"#) == ["type": .string("ack"), "seq": .integer(42)])
        #expect(ClientMessage.flatObject(#"{"type":"a\u0063k","seq":1}"#) == nil)
        #expect(ClientMessage.flatObject(#"{"type":"ack","seq":1,"type":"ping"}"#) == nil)
        if case .ack(let seq) = ClientMessage.parse(#"{"type":"ack","seq":42}"#) { #expect(seq == 42) } else { Issue.record("expected an ack") }
        if case .ack(let seq) = ClientMessage.parse(#"{"type":"a\u0063k","seq":5}"#) { #expect(seq == 5) } else { Issue.record("expected an ack") }
        if case .invalid = ClientMessage.parse(#"{"type":"ack","seq":-1}"#) {} else { Issue.record("negative seq must be invalid") }
        if case .invalid = ClientMessage.parse(#"{"type":"ack","seq":01}"#) {} else { Issue.record("leading zero must be invalid") }
    }

    /// The protocol is as strict as HTTP bodies (found by a fresh-user trial): a `since` of
    /// `1e-400` (read as 0 before) or any fraction is refused, so is a member the message type
    /// does not have, and the reason for a repeated member names it.
    @Test func underflowingSeqsUnknownMembersAndRepeatsAreRefusedByName() {
        func reason(_ text: String) -> String? {
            switch ClientMessage.parse(text) {
            case .invalid(let reason), .violation(let reason): return reason
            default: return nil
            }
        }
        for sample in [
            #"{"type":"subscribe","since":1e-400}"#, #"{"type":"subscribe","since":0.5}"#, #"{"type":"subscribe","since":"1"}"#,
            #"{"type":"ack","seq":1e-400}"#,
        ] {
            #expect(reason(sample) != nil, "\(sample)")
        }
        #expect(reason(#"{"type":"subscribe","since":1e-400}"#)?.contains("since") == true)
        #expect(reason(#"{"type":"subscribe","sinse":4}"#) == #"unknown member "sinse" in a "subscribe" message"#)
        #expect(reason(#"{"type":"ping","x":1}"#) == #"unknown member "x" in a "ping" message"#)
        #expect(reason(#"{"type":"auth","token":"t","extra":null}"#) == #"unknown member "extra" in an "auth" message"#)
        #expect(reason(#"{"type":"ack","seq":1,"since":2}"#) == #"unknown member "since" in an "ack" message"#)
        #expect(reason(#"{"type":"ack","seq":1,"seq":2}"#) == #"member "seq" is repeated"#)
        #expect(reason(#"{"type":"ack","type":"ack","seq":1}"#) == #"member "type" is repeated"#)
        // An `auth` with a repeated member is a malformed auth (1008 whatever the socket's state);
        // with `type` itself repeated, the type is not known.
        if case .violation(let reason) = ClientMessage.parse(#"{"type":"auth","token":"a","token":"b"}"#) {
            #expect(reason == #"member "token" is repeated"#)
        } else {
            Issue.record("an auth with a repeated token is not a violation")
        }
        if case .violation = ClientMessage.parse(#"{"type":"auth","token":"a","x":{"y":1,"y":2}}"#) {
        } else {
            Issue.record("an auth with a repeated nested member is not a violation")
        }
        if case .invalid = ClientMessage.parse(#"{"type":"auth","type":"ack","token":"a"}"#) {
        } else {
            Issue.record("a message with a repeated type is taken for an auth")
        }
        // What the protocol has still parses, through either parser.
        if case .subscribe(let since) = ClientMessage.parse(#"{"type":"subscribe","since":7}"#) {
            #expect(since == 7)
        } else {
            Issue.record("subscribe")
        }
        if case .subscribe(let since) = ClientMessage.parse(#"{"type":"subscribe","since":7.0}"#) { #expect(since == 7) } else { Issue.record("7.0") }
        if case .subscribe(let since) = ClientMessage.parse(#"{"type":"subscribe"}"#) { #expect(since == nil) } else { Issue.record("no since") }
        if case .ping = ClientMessage.parse(#"{ "type" : "ping" }"#) {} else { Issue.record("ping") }
        if case .auth = ClientMessage.parse(#"{"type":"auth","token":"a\/b"}"#) {} else { Issue.record("escaped token") }
    }

    /// A member repeated in one message is refused, as in every other JSON input (RFC 8259 §4),
    /// and so is an ack of 0 (seqs start at 1): both were taken before (found by a fresh-user
    /// trial; the repeat was read as its last value).
    @Test func repeatedMembersAndAnAckOfZeroAreInvalid() {
        for sample in [
            #"{"type":"ack","seq":1,"type":"ping"}"#, #"{"type":"ack","seq":1,"seq":2}"#, #"{"type":"subscribe","since":1,"since":null}"#,
            #"{"type":"ping","x":{"a":1,"a":2}}"#, #"{"type":"ack","seq":0}"#, #"{"type":"ack","seq":-1}"#,
        ] {
            if case .invalid = ClientMessage.parse(sample) {} else { Issue.record("\(sample) must be invalid") }
        }
        if case .ack(let seq) = ClientMessage.parse(#"{"type":"ack","seq":1}"#) { #expect(seq == 1) } else { Issue.record("expected an ack") }
    }
}

@Suite("Notifications: acks taken on the event loop")
struct AckTakerTests {
    private static func text(_ string: String, fin: Bool = true, opcode: WebSocketOpcode = .text) -> WebSocketFrame {
        let key = WebSocketMaskingKey.random()
        var data = ByteBuffer(string: string)
        data.webSocketMask(key)
        return WebSocketFrame(fin: fin, opcode: opcode, maskKey: key, data: data)
    }

    /// Once the socket subscribed, a client's acks go from the event loop straight to the
    /// mailbox (set aside, as the reader would have put them) and never reach the reader;
    /// every other frame, and acks before the subscription, reach it untouched and in order.
    @Test func acksOfASubscribedSocketSkipTheReader() async throws {
        let mailbox = Mailbox(capacity: 10)
        let channel = EmbeddedChannel(handler: AckTaker(mailbox: mailbox))
        func passed() throws -> [String] {
            var texts: [String] = []
            while let frame = try channel.readInbound(as: WebSocketFrame.self) { texts.append(String(buffer: frame.unmaskedData)) }
            return texts
        }
        try channel.writeInbound(Self.text(#"{"type":"ack","seq":1}"#))
        #expect(try passed() == [#"{"type":"ack","seq":1}"#])
        mailbox.takeAcksAside(wake: false)
        try channel.writeInbound(Self.text(#"{"type":"ack","seq":2}"#))
        try channel.writeInbound(Self.text(#"{"type":"ping"}"#))
        try channel.writeInbound(Self.text(#"{"type":"ack","#, fin: false))
        try channel.writeInbound(Self.text(#""seq":3}"#, opcode: .continuation))
        try channel.writeInbound(Self.text(#"{"type":"ack","seq":4}"#))
        #expect(try passed() == [#"{"type":"ping"}"#, #"{"type":"ack","#, #""seq":3}"#])
        mailbox.push(client: .ping)
        let batch = await mailbox.next()
        #expect(batch.acked == 4 && batch.client.count == 1)
        _ = try channel.finish()
    }
}
