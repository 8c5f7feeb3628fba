package import Logging
package import W3CTraceContext

/// The sampler named by `OTEL_TRACES_SAMPLER` and `OTEL_TRACES_SAMPLER_ARG`, applied by Cairn's
/// tracer (``BatchedEndTracer``) before any span object is made (issue 16).
///
/// swift-otel samples inside its tracer, after it has drawn the span's ids from the system's
/// random source (three `getrandom` calls for a root span) and allocated the span: at 10 %,
/// nine requests in ten paid that for a span nobody reads. Here the decision comes first, from
/// one cheap draw, and a dropped root costs a W3C context and nothing more; swift-otel, given
/// only the spans to record, runs with `always_on`.
///
/// The values and defaults are swift-otel's: `parentbased_always_on` unless set; `always_on`,
/// `always_off`, `traceidratio`, `parentbased_always_on`, `parentbased_always_off`,
/// `parentbased_traceidratio`; the ratio (default 1) in `[0, 1]`. A value it does not know
/// is reported and the default used; the Jaeger and X-Ray samplers (which swift-otel does not
/// support either) are refused.
package struct HeadSampler: Sendable, Equatable, CustomStringConvertible {
    /// How the root span of a trace (or, without `parentBased`, every span) is decided.
    package enum Rule: Sendable, Equatable {
        /// Always sampled.
        case always
        /// Never sampled.
        case never
        /// Sampled when the trace id, read as OpenTelemetry's `TraceIdRatioBased` sampler
        /// reads it, falls below `ratio`.
        case ratio(Double)
    }

    /// The rule for root spans.
    package let root: Rule
    /// Whether a span with a parent follows its parent's decision (`parentbased_*`) rather
    /// than `root`'s.
    package let parentBased: Bool
    /// The exclusive upper bound a trace id's last eight bytes are compared with (ratio rules).
    private let bound: UInt64

    /// swift-otel's default: parent-based, every root sampled.
    package static let parentBasedAlwaysOn = HeadSampler(root: .always, parentBased: true)

    /// A sampler with `root` for root spans, and for children too unless `parentBased`.
    package init(root: Rule, parentBased: Bool) {
        self.root = root
        self.parentBased = parentBased
        switch root {
        case .always: bound = .max
        case .never: bound = .min
        case .ratio(let ratio):
            // As swift-otel's TraceIdRatioBased sampler computes it, so both agree on a trace.
            bound = ratio <= 0 ? .min : ratio >= 1 ? .max : UInt64(ratio * Double(UInt64.max))
        }
    }

    /// A sampler that refuses to be configured (a sampler swift-otel does not support).
    package struct UnsupportedSampler: Error, CustomStringConvertible {
        /// The value of `OTEL_TRACES_SAMPLER`.
        package let name: String
        /// What is wrong.
        package var description: String { "OTEL_TRACES_SAMPLER=\(name) is not supported (swift-otel has no such sampler)" }
    }

    /// The sampler `environment` configures; a value that is not understood is reported to
    /// `logger` and ignored, as swift-otel does.
    /// - Throws: ``UnsupportedSampler`` for `jaeger_remote`, `parentbased_jaeger_remote` and `xray`.
    package init(environment: [String: String], logger: Logger) throws {
        let name = environment["OTEL_TRACES_SAMPLER"] ?? "parentbased_always_on"
        var ratio = 1.0
        if let argument = environment["OTEL_TRACES_SAMPLER_ARG"], name == "traceidratio" || name == "parentbased_traceidratio" {
            if let value = Double(argument), value >= 0, value <= 1 {
                ratio = value
            } else {
                logger.warning(
                    "OTEL_TRACES_SAMPLER_ARG ignored: not a sampling probability in [0, 1]", metadata: ["environment_value": "\(argument)"])
            }
        }
        switch name {
        case "parentbased_always_on": self.init(root: .always, parentBased: true)
        case "always_on": self.init(root: .always, parentBased: false)
        case "always_off": self.init(root: .never, parentBased: false)
        case "traceidratio": self.init(root: .ratio(ratio), parentBased: false)
        case "parentbased_always_off": self.init(root: .never, parentBased: true)
        case "parentbased_traceidratio": self.init(root: .ratio(ratio), parentBased: true)
        case "jaeger_remote", "parentbased_jaeger_remote", "xray": throw UnsupportedSampler(name: name)
        default:
            logger.warning(
                "OTEL_TRACES_SAMPLER ignored: not a known sampler; using parentbased_always_on", metadata: ["environment_value": "\(name)"])
            self.init(root: .always, parentBased: true)
        }
    }

    /// Whether a root span of trace `traceID` is sampled.
    package func samplesRoot(_ traceID: TraceID) -> Bool {
        switch bound {
        case .max: return true
        case .min: return false
        default:
            // swift-otel reads bytes 8..<16 in the machine's order (little-endian here).
            let b = traceID.bytes
            let low = UInt64(b.8) | UInt64(b.9) << 8 | UInt64(b.10) << 16 | UInt64(b.11) << 24
            let high = UInt64(b.12) | UInt64(b.13) << 8 | UInt64(b.14) << 16 | UInt64(b.15) << 24
            return low | high << 32 < bound
        }
    }

    /// Whether a span whose parent came from another process (`traceparent`, a job row) is
    /// sampled: as the parent was, when parent-based; else as a root of the same trace.
    package func samplesChild(ofRemote parent: W3CTraceContext.TraceContext) -> Bool {
        parentBased ? parent.flags.contains(.sampled) : samplesRoot(parent.traceID)
    }

    /// The sampler as OpenTelemetry names it, with its ratio.
    package var description: String {
        let rule =
            switch root {
            case .always: parentBased ? "parentbased_always_on" : "always_on"
            case .never: parentBased ? "parentbased_always_off" : "always_off"
            case .ratio(let ratio): (parentBased ? "parentbased_traceidratio" : "traceidratio") + " \(ratio)"
            }
        return rule
    }
}
