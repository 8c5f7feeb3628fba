import CairnStorage
import HTTPTypes
package import Hummingbird
import Tracing

/// One OpenTelemetry server span per request (issue 16), continuing the caller's trace when
/// the request carries W3C Trace Context (`traceparent`, `tracestate`).
///
/// Hummingbird's `TracingMiddleware`, with what Cairn needs on top: `url.query` with the values
/// of credential parameters (`access_token`, RFC 6750 §2.3) replaced by `***` exactly as the
/// request log does (after percent-decoding, in any case); no header or body recorded; the
/// span named `METHOD /route/template` with `http.route` the route template. The tenant id is
/// added by the Bearer middleware (`cairn.tenant_id`). The span covers the handler, not the
/// streaming of a long body (an SSE stream would otherwise keep it open for hours).
/// Installed first, so the request id, problem mapping and request log run inside the span and
/// their log lines carry its ids. With no tracer installed it only calls `next`.
package struct RequestTracingMiddleware<Context: RequestContext>: RouterMiddleware {
    /// Creates the middleware.
    package init() {}

    /// Handles one request.
    package func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        guard let tracer = TraceContext.tracer else { return try await next(request, context) }
        let current = ServiceContext.current
        var parent = current ?? .topLevel
        if current == nil, request.headers[HTTPFieldsExtractor.traceParent] == nil, let sampler = TraceContext.installedRootSampler {
            // A new trace: the sampler decides before any span is made, and a dropped request
            // (most of them at a low ratio) runs in the dropped span's context and nothing else.
            switch sampler.decideRoot() {
            case .dropped(let dropped):
                return try await ServiceContext.$current.withValue(dropped) { try await next(request, context) }
            case .recorded(let root):
                parent = root
            }
        } else {
            tracer.extract(request.headers, into: &parent, using: HTTPFieldsExtractor())
        }
        let span: any Span = tracer.startSpan(request.method.rawValue, context: parent, ofKind: .server)
        defer { span.end() }
        // A request the sampler dropped runs with the dropped span's context (so `traceparent`
        // still goes out, flagged not sampled) and none of the attribute work below.
        guard span.isRecording else {
            return try await ServiceContext.$current.withValue(TraceContext.context(for: span)) { try await next(request, context) }
        }
        // One update: each attribute set on its own takes the span's lock and copies the
        // attribute dictionary.
        span.updateAttributes { attributes in
            // `set` stores the attribute itself: the subscript boxes each value as an existential.
            attributes.set("http.request.method", value: .string(request.method.rawValue))
            attributes.set("url.path", value: .string(request.uri.path))
            attributes.set("url.scheme", value: "http")
            if let query = request.uri.query, !query.isEmpty {
                attributes.set("url.query", value: .string(RequestLogMiddleware<Context>.redactedQuery(query)))
            }
            if let agent = request.headers[.userAgent] { attributes.set("user_agent.original", value: .string(agent)) }
            if let context = context as? CairnRequestContext { attributes.set("client.address", value: .string(context.clientAddress)) }
        }
        do {
            let response = try await ServiceContext.$current.withValue(TraceContext.context(for: span)) { try await next(request, context) }
            finish(span, status: Int(response.status.code), route: context.endpointPath, method: request.method)
            return response
        } catch {
            let status = (error as? any HTTPResponseError)?.status.code ?? 500
            finish(span, status: Int(status), route: context.endpointPath, method: request.method)
            span.recordError(error)
            throw error
        }
    }

    private func finish(_ span: any Span, status: Int, route: String?, method: HTTPRequest.Method) {
        if let route { span.operationName = "\(method.rawValue) \(route)" }
        span.updateAttributes { attributes in
            if let route { attributes.set("http.route", value: .string(route)) }
            attributes.set("http.response.status_code", value: .int64(Int64(status)))
        }
        // Server spans are errors for 5xx only (OpenTelemetry HTTP conventions): a 4xx is the
        // client's mistake.
        if status >= 500 { span.setStatus(.init(code: .error)) }
    }
}

/// Reads propagation headers (`traceparent`, `tracestate`) from a request's fields.
struct HTTPFieldsExtractor: Extractor {
    static let traceParent = HTTPField.Name("traceparent")!
    private static let traceState = HTTPField.Name("tracestate")!

    func extract(key: String, from carrier: HTTPFields) -> String? {
        // The two names every request is asked for are made once, not validated per request.
        let name: HTTPField.Name? =
            switch key {
            case "traceparent": Self.traceParent
            case "tracestate": Self.traceState
            default: HTTPField.Name(key)
            }
        return name.flatMap { carrier[$0] }
    }
}
