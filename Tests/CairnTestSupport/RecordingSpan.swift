import Synchronization
package import Tracing

/// A span that records until it is ended, like a sampled OpenTelemetry span (or, made with
/// `recording: false`, like a dropped one), and remembers when it was ended and how often.
package final class RecordingSpan: Span {
    package let context: ServiceContext = .topLevel
    /// Whether the span recorded when it started (a sampled span).
    package let isRecordingAtStart: Bool
    /// When it started, in nanoseconds since the epoch (0 unless given).
    package let start: UInt64
    /// The kind it was started with.
    package let kind: SpanKind
    private let state = Mutex<(name: String, attributes: SpanAttributes, ends: [UInt64])>(("", [:], []))

    /// A span named `name`, recording unless `recording` is false.
    package init(_ name: String, recording: Bool = true, start: UInt64 = 0, kind: SpanKind = .internal) {
        isRecordingAtStart = recording
        self.start = start
        self.kind = kind
        state.withLock { $0.name = name }
    }

    /// The times it was ended at, in nanoseconds since the epoch, in the order of the calls.
    package var ends: [UInt64] { state.withLock { $0.ends } }
    package var operationName: String {
        get { state.withLock { $0.name } }
        set { state.withLock { $0.name = newValue } }
    }
    package var attributes: SpanAttributes {
        get { state.withLock { $0.attributes } }
        set { state.withLock { $0.attributes = newValue } }
    }
    package var isRecording: Bool { isRecordingAtStart && ends.isEmpty }
    package func setStatus(_ status: SpanStatus) {}
    package func addEvent(_ event: SpanEvent) {}
    package func recordError<Instant: TracerInstant>(
        _ error: any Error, attributes: SpanAttributes, at instant: @autoclosure () -> Instant
    ) {}
    package func addLink(_ link: SpanLink) {}
    package func end<Instant: TracerInstant>(at instant: @autoclosure () -> Instant) {
        let at = instant().nanosecondsSinceEpoch
        state.withLock { $0.ends.append(at) }
    }
}
