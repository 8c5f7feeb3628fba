import CairnAccounts
package import CairnHTTP
import CairnNotifications
import CairnStorage
import Foundation
import HTTPTypes
package import Hummingbird
import Mustache
import NIOCore
import SQLKit

/// The parts a channel's template may have: email `subject`, `html`, `text`; SMS `text`;
/// push `title`, `body`; and the same prefixed with `digest` for the digests of the type.
enum TemplateChannel: String, CaseIterable {
    case email
    case sms
    case push

    /// The parts of one notification's message, in order.
    var parts: [String] {
        switch self {
        case .email: ["subject", "html", "text"]
        case .sms: ["text"]
        case .push: ["title", "body"]
        }
    }

    /// The parts of a digest's message (`digestSubject`, `digestHtml`, …), in order.
    var digestParts: [String] {
        parts.map(Self.digestPart)
    }

    /// The digest counterpart of a message part: `subject` → `digestSubject`.
    static func digestPart(_ part: String) -> String {
        "digest" + part.prefix(1).uppercased() + part.dropFirst()
    }

    /// Every part a template of the channel may have.
    var allParts: [String] { parts + digestParts }

    /// Whether `part` is HTML (escaped by default, the only place for raw output).
    func isHTML(_ part: String) -> Bool {
        self == .email && (part == "html" || part == "digestHtml")
    }

    /// What a digest part may name at its top level: `count`, `notifications` (each with
    /// `title`, `body`, `createdAt` and its `data` members), `period`, `type`, `windowEnd`.
    static let digestVariables: Set<String> = ["count", "notifications", "period", "type", "windowEnd"]
}

/// A tenant's templates for one notification type: per locale variant (`default` and BCP 47
/// tags, RFC 5646), per channel, per part, Mustache text.
///
/// JSON: `{"variables": [name]?, "default": {channel: {part: text}}, "locales": {tag: {channel: {part: text}}}?}`.
struct NotificationTemplate: Sendable, Codable, Equatable {
    /// The variables the type's `data` declares (optional); `title` and `body` are always there.
    var variables: [String]?
    /// The variant used when no locale variant has the channel.
    var `default`: [String: [String: String]]
    /// Variants by BCP 47 tag (`de`, `de-AT`).
    var locales: [String: [String: [String: String]]]?

    /// The locale chain of `tag`: `de-AT` → `de-AT`, `de`; nil → none. Case-insensitive.
    static func chain(_ tag: String?) -> [String] {
        guard let tag, !tag.isEmpty else { return [] }
        var parts = tag.split(separator: "-").map(String.init)
        var chain: [String] = []
        while !parts.isEmpty {
            chain.append(parts.joined(separator: "-"))
            parts.removeLast()
        }
        return chain
    }

    /// The parts for `channel` in `locale`, each from the most specific variant that has it
    /// (`de-AT`, then `de`, then `default`: a regional variant may override only the subject),
    /// and the most specific tag used; nil when no variant has the channel.
    func variant(_ channel: TemplateChannel, locale: String?) -> (tag: String, parts: [String: String])? {
        let byLower = Dictionary((locales ?? [:]).map { ($0.key.lowercased(), $0) }, uniquingKeysWith: { first, _ in first })
        var variants: [(String, [String: String])] = Self.chain(locale?.lowercased()).compactMap { tag in
            guard let (original, variant) = byLower[tag], let parts = variant[channel.rawValue] else { return nil }
            return (original, parts)
        }
        if let parts = self.default[channel.rawValue] { variants.append(("default", parts)) }
        guard let tag = variants.first?.0 else { return nil }
        var parts: [String: String] = [:]
        for part in channel.allParts {
            parts[part] = variants.lazy.compactMap { $0.1[part] }.first
        }
        return (tag, parts)
    }

    /// Checks the document: known channels and parts, BCP 47-shaped tags, Mustache syntax
    /// (with the position of an error), no partials, pragmas or delimiter changes, raw output
    /// (`{{{…}}}`, `{{&…}}`) only in email `html`, and, when `variables` is given, no
    /// top-level variable outside it (besides `title` and `body`).
    /// - Throws: 400 `invalid_input` naming each bad field.
    func validate() throws {
        var issues: [FieldIssue] = []
        let declared = variables.map { Set($0 + ["title", "body"]) }
        if let variables, variables.count > 100 || variables.contains(where: { !Self.isName($0) }) {
            issues.append(FieldIssue(field: "variables", issue: "must list at most 100 names of letters, digits and _"))
        }
        var variants: [(String, [String: [String: String]])] = [("default", self.default)]
        for (tag, variant) in (locales ?? [:]).sorted(by: { $0.key < $1.key }) {
            if !Self.isLanguageTag(tag) { issues.append(FieldIssue(field: "locales.\(tag)", issue: "must be a BCP 47 language tag")) }
            variants.append(("locales.\(tag)", variant))
        }
        if (locales?.count ?? 0) > 100 { issues.append(FieldIssue(field: "locales", issue: "must have at most 100 entries")) }
        for (prefix, variant) in variants {
            for (channelName, parts) in variant.sorted(by: { $0.key < $1.key }) {
                guard let channel = TemplateChannel(rawValue: channelName) else {
                    issues.append(FieldIssue(field: "\(prefix).\(channelName)", issue: "must be email, sms or push"))
                    continue
                }
                for (part, text) in parts.sorted(by: { $0.key < $1.key }) {
                    let field = "\(prefix).\(channelName).\(part)"
                    guard channel.allParts.contains(part) else {
                        issues.append(FieldIssue(field: field, issue: "must be one of \(channel.allParts.joined(separator: ", "))"))
                        continue
                    }
                    issues += Self.partIssues(text, field: field, channel: channel, part: part, declared: declared)
                }
            }
        }
        if !issues.isEmpty { throw AppError.invalidInput(issues) }
    }

    /// What is wrong with the text of one `part` of `channel`: its size, its Mustache syntax and,
    /// once it parses, the tags it uses; `declared` is the type's variables (nil: any goes).
    /// The most bytes of UTF-8 one template part may hold.
    static let maximumPartBytes = 100_000
    /// The most tags (`{{…}}`, sections and comments included) one template part may hold: with
    /// the size bound, it keeps the parser's work per part to a fraction of a second.
    static let maximumPartTags = 500

    static func partIssues(_ text: String, field: String, channel: TemplateChannel, part: String, declared: Set<String>?) -> [FieldIssue] {
        var issues: [FieldIssue] = []
        // swift-mustache's parser takes time in proportion to the tags times the text's length
        // (it measures the rest of the text at each tag): the bounds are checked first, and a
        // part past them is not parsed at all (a megabyte of `{{s}}` took minutes of CPU).
        if text.utf8.count > maximumPartBytes {
            return [FieldIssue(field: field, issue: "must be at most 100,000 bytes")]
        }
        let scan = TemplateScan(text)
        if scan.tags > maximumPartTags {
            return [FieldIssue(field: field, issue: "must have at most \(maximumPartTags) tags ({{…}}), has \(scan.tags)")]
        }
        if let unsupported = scan.unsupported {
            return [FieldIssue(field: field, issue: "must not use \(unsupported)")]
        }
        do {
            _ = try MustacheTemplate(string: text)
        } catch let error as MustacheTemplate.ParserError {
            let position = "line \(error.context.lineNumber), column \(error.context.columnNumber)"
            return issues + [FieldIssue(field: field, issue: "Mustache syntax error at \(position): \(error.error)")]
        } catch {
            return issues + [FieldIssue(field: field, issue: "is not a valid Mustache template")]
        }
        if scan.raw && !channel.isHTML(part) {
            issues.append(FieldIssue(field: field, issue: "raw output ({{{…}}} or {{&…}}) is only for email html and digestHtml"))
        }
        let roots = scan.topLevel.map { root($0) }
        if channel.digestParts.contains(part) {
            // A digest's variables are Cairn's, known here: an unknown one is an error now.
            if let unknown = roots.first(where: { !TemplateChannel.digestVariables.contains($0) }) {
                let known = TemplateChannel.digestVariables.sorted().joined(separator: ", ")
                issues.append(FieldIssue(field: field, issue: "uses the variable \(unknown); a digest part may use \(known)"))
            }
        } else if let declared, let unknown = roots.first(where: { !declared.contains($0) }) {
            issues.append(FieldIssue(field: field, issue: "uses the variable \(unknown), which is not in variables"))
        }
        return issues
    }

    /// The first segment of a dotted name.
    static func root(_ name: String) -> String {
        String(name.split(separator: ".", maxSplits: 1).first ?? Substring(name))
    }

    static func isName(_ text: String) -> Bool {
        !text.isEmpty && text.utf8.count <= 64
            && text.unicodeScalars.allSatisfy { $0.isASCII && (CharacterSet.alphanumerics.contains($0) || $0 == "_") }
    }

    /// A BCP 47 shape (RFC 5646), as on the user's profile.
    static func isLanguageTag(_ text: String) -> Bool {
        AccountRules.isLanguageTag(text)
    }
}

/// What a template's tags name, found by scanning `{{…}}` (swift-mustache keeps its tokens to itself).
struct TemplateScan {
    /// Variables outside any section (their names resolve against the notification itself).
    var topLevel: [String] = []
    /// Whether the template outputs a value raw.
    var raw = false
    /// A construct Cairn's templates do not support (partials, pragmas, delimiter changes, blocks).
    var unsupported: String?
    /// The tags (`{{` … `}}`) read; delimiter changes are refused, so every tag opens with `{{`.
    var tags = 0

    init(_ text: String) {
        var depth = 0
        var rest = Substring(text)
        while let open = rest.range(of: "{{") {
            rest = rest[open.upperBound...]
            tags += 1
            let triple = rest.first == "{"
            guard let close = rest.range(of: triple ? "}}}" : "}}") else { break }
            var tag = rest[..<close.lowerBound]
            rest = rest[close.upperBound...]
            if triple { tag = tag.dropFirst() }
            tag = Substring(tag.trimmingCharacters(in: .whitespaces))
            let sigil = triple ? "{" : tag.first.map(String.init) ?? ""
            let name = triple ? String(tag) : String(tag.dropFirst()).trimmingCharacters(in: .whitespaces)
            switch sigil {
            case "{", "&":
                raw = true
                if depth == 0 { topLevel.append(name) }
            case "#", "^":
                if depth == 0 { topLevel.append(name) }
                depth += 1
            case "/": depth = max(0, depth - 1)
            case "!": break
            case ">": unsupported = unsupported ?? "partials ({{>…}})"
            case "%": unsupported = unsupported ?? "pragmas ({{%…}})"
            case "=": unsupported = unsupported ?? "delimiter changes ({{=…=}})"
            case "$", "<": unsupported = unsupported ?? "blocks and inheritance"
            default:
                if depth == 0 { topLevel.append(String(tag)) }
            }
        }
    }
}

/// Why a template could not be rendered for a notification: the delivery fails for good with
/// `reason` (a dead letter), and a preview answers 400 naming `field`.
protocol TemplateRenderError: Error {
    /// The request field at fault in a preview (`data.<name>`, or `data`).
    var field: String { get }
    /// The stable code and what it concerns, as a delivery records it.
    var reason: String { get }
}

/// A template variable the notification does not have.
struct TemplateVariableMissing: TemplateRenderError {
    /// The variable's name.
    var name: String
    var field: String { "data.\(name)" }
    var reason: String { "template_variable_missing: \(name)" }
}

/// A part whose rendering would write more than ``RenderBudget/limit`` bytes: sections nested
/// over the data's lists grow as the product of their lengths (four levels over 60 items wrote
/// 130 MB and held a node's memory), so a render is bounded, not trusted.
struct TemplateOutputTooLarge: TemplateRenderError {
    /// The part (`html`, `text`, …).
    var part: String
    var field: String { "data" }
    var reason: String { "template_output_too_large: \(part) would render more than \(RenderBudget.limit >> 20) MiB" }
}

/// What one rendered part may write, charged before the writing: each time a section or a
/// variable looks a list up, the list's length times an upper bound of what one item can
/// write (the part's source plus the longest string in the data). Once the charges pass
/// ``limit``, every list looks empty and the render is refused (``TemplateOutputTooLarge``).
final class RenderBudget {
    /// Bytes one part may write, at most.
    static let limit = 8 << 20
    private let perItem: Int
    private var charged = 0
    /// Whether some list was refused.
    private(set) var exhausted = false

    /// A budget for rendering `source` over `context`.
    init(source: String, context: [String: Any]) {
        perItem = source.utf8.count + Self.longestString(in: context)
    }

    /// Charges a list of `count` items; false (and exhausted from then on) past the limit.
    func charge(_ count: Int) -> Bool {
        guard !exhausted else { return false }
        let (sum, overflow) = charged.addingReportingOverflow(count.multipliedReportingOverflow(by: perItem).partialValue)
        guard !overflow, sum <= Self.limit else {
            exhausted = true
            return false
        }
        charged = sum
        return true
    }

    /// `context` with every list, at any depth, charged to this budget when looked up.
    func bounding(_ context: [String: Any]) -> [String: Any] { context.mapValues(bounding) }

    private func bounding(_ value: Any) -> Any {
        switch value {
        case let items as [Any]: BoundedList(items: items.map(bounding), budget: self)
        case let members as [String: Any]: members.mapValues(bounding)
        default: value
        }
    }

    private static func longestString(in value: Any) -> Int {
        switch value {
        case let text as String: text.utf8.count
        case let items as [Any]: items.map(longestString).max() ?? 0
        case let members as [String: Any]: members.values.map(longestString).max() ?? 0
        default: 32  // a number or a boolean
        }
    }
}

/// A list of the render context that charges its ``RenderBudget`` when looked up, then is the
/// plain array to Mustache (so sections, inverted sections and transforms treat it as one).
private struct BoundedList: MustacheCustomRepresentation {
    let items: [Any]
    let budget: RenderBudget

    var representation: Any? { budget.charge(items.count) ? items : [Any]() }
}

/// Rendering of a notification through its type's templates.
enum TemplateRenderer {
    /// The Mustache context: the notification's `data` members, then `title` and `body`.
    static func context(title: String, body: String, data: JSONValue) -> [String: Any] {
        var context: [String: Any] = [:]
        if case .object(let members) = data { for (key, value) in members { context[key] = foundation(value) } }
        context["title"] = title
        context["body"] = body
        return context
    }

    static func foundation(_ value: JSONValue) -> Any {
        switch value {
        case .null: return NSNull()
        case .bool(let value): return value
        case .number(let value): return value.rounded() == value && abs(value) < 1e15 ? Int(value) as Any : value as Any
        case .string(let value): return value
        case .array(let items): return items.map(foundation)
        case .object(let members): return members.mapValues(foundation)
        }
    }

    static func has(_ name: String, in context: [String: Any]) -> Bool {
        if name == "." { return true }
        var current: Any? = context
        for segment in name.split(separator: ".") {
            guard let object = current as? [String: Any], let next = object[String(segment)], !(next is NSNull) else { return false }
            current = next
        }
        return true
    }

    /// Renders the channel's parts of the variant for `locale`: HTML-escaped in email `html`,
    /// plain text elsewhere. Nil when the template has no variant for the channel.
    /// - Throws: ``TemplateVariableMissing`` for a top-level variable the context lacks (sections
    ///   may be missing: they render nothing); ``TemplateOutputTooLarge`` for a part that would
    ///   write more than ``RenderBudget/limit``.
    /// `digest` renders the digest parts (`digestSubject`, …) instead of the message's.
    static func render(
        _ template: NotificationTemplate, channel: TemplateChannel, locale: String?, context: [String: Any], digest: Bool = false
    ) throws -> (tag: String, parts: [String: String])? {
        guard let (tag, parts) = template.variant(channel, locale: locale) else { return nil }
        var rendered: [String: String] = [:]
        for part in digest ? channel.digestParts : channel.parts {
            guard let text = parts[part] else { continue }
            let scan = TemplateScan(text)
            let sections = Set(TemplateScan.sectionNames(text))
            if let missing = scan.topLevel.first(where: { !sections.contains($0) && !has($0, in: context) }) {
                throw TemplateVariableMissing(name: missing)
            }
            let source = channel.isHTML(part) ? text : "{{% CONTENT_TYPE: TEXT}}" + text
            let budget = RenderBudget(source: source, context: context)
            let output = try MustacheTemplate(string: source).render(budget.bounding(context))
            guard !budget.exhausted, output.utf8.count <= RenderBudget.limit else { throw TemplateOutputTooLarge(part: part) }
            rendered[part] = output
        }
        return (tag, rendered)
    }
}

extension TemplateScan {
    /// The names of the top-level sections (`{{#name}}`, `{{^name}}`), which may be missing.
    static func sectionNames(_ text: String) -> [String] {
        var names: [String] = []
        var rest = Substring(text)
        while let open = rest.range(of: "{{") {
            rest = rest[open.upperBound...]
            guard let close = rest.range(of: "}}") else { break }
            let tag = rest[..<close.lowerBound].trimmingCharacters(in: .whitespaces)
            if tag.first == "#" || tag.first == "^" { names.append(String(tag.dropFirst()).trimmingCharacters(in: .whitespaces)) }
        }
        return names
    }
}

/// Templates in the database (`notification_templates`).
enum TemplateStore {
    static func get(tenantId: String, type: String, on db: any SQLDatabase) async throws -> (NotificationTemplate, Int64, Int64)? {
        guard
            let row = try await db.raw(
                "SELECT document, created_at, updated_at FROM notification_templates WHERE tenant_id = \(bind: tenantId) AND type = \(bind: type)"
            ).first()
        else { return nil }
        let template = try JSONDecoder().decode(NotificationTemplate.self, from: Data(try row.decode(column: "document", as: String.self).utf8))
        return (template, try row.decode(column: "created_at", as: Int64.self), try row.decode(column: "updated_at", as: Int64.self))
    }

    /// Stores `template` for `type`; the same document again writes nothing, so `updatedAt` stays.
    static func put(_ template: NotificationTemplate, tenantId: String, type: String, on db: any SQLDatabase) async throws {
        let encoder = JSONEncoder()
        encoder.outputFormatting = .sortedKeys
        let document = String(decoding: try encoder.encode(template), as: UTF8.self)
        let now = WallClock.milliseconds()
        try await db.raw(
            """
            INSERT INTO notification_templates (tenant_id, type, document, created_at, updated_at)
            VALUES (\(bind: tenantId), \(bind: type), \(bind: document), \(bind: now), \(bind: now))
            ON CONFLICT (tenant_id, type) DO UPDATE SET document = excluded.document, updated_at = excluded.updated_at
            WHERE notification_templates.document IS DISTINCT FROM excluded.document
            """
        ).run()
    }

    static func delete(tenantId: String, type: String, on db: any SQLDatabase) async throws -> Bool {
        try await db.raw("DELETE FROM notification_templates WHERE tenant_id = \(bind: tenantId) AND type = \(bind: type) RETURNING type").first()
            != nil
    }
}

/// `/notification-templates/{type}` (owners and admins): a notification type's per-channel,
/// per-locale Mustache templates, and a preview.
package struct TemplatesController: Sendable {
    let channels: OutboundChannels

    /// Creates the controller.
    package init(channels: OutboundChannels) {
        self.channels = channels
    }

    struct PreviewBody: Decodable {
        var channel: String
        var locale: String?
        var title: String?
        var body: String?
        var data: JSONValue?
    }

    /// Adds the routes for owners and admins.
    package func addRoutes(to group: RouterGroup<AuthenticatedContext>) {
        group.group("notification-templates").add(middleware: RequireAdmin())
            .get(":type", use: show)
            .put(":type", use: replace)
            .delete(":type", use: delete)
            .post(":type/preview", use: preview)
    }

    func type(_ context: AuthenticatedContext) throws -> String {
        let type = try context.parameters.require("type")
        guard NotificationDraft.isValidType(type) else { throw AppError.notFound("No such notification type.") }
        return type
    }

    /// `{type, variables?, default, locales?, createdAt, updatedAt}`.
    struct Stored: JSONWritable {
        var type: String
        var template: NotificationTemplate
        var createdAt: Int64
        var updatedAt: Int64

        func writeJSON(to writer: inout JSONWriter) {
            let encoder = JSONEncoder()
            encoder.outputFormatting = .sortedKeys
            writer.objectStart()
            writer.field("type", type)
            if let variables = template.variables {
                writer.field("variables", json: (try? encoder.encode(variables)).map { String(decoding: $0, as: UTF8.self) } ?? "[]")
            }
            writer.field("default", json: (try? encoder.encode(template.default)).map { String(decoding: $0, as: UTF8.self) } ?? "{}")
            if let locales = template.locales {
                writer.field("locales", json: (try? encoder.encode(locales)).map { String(decoding: $0, as: UTF8.self) } ?? "{}")
            }
            writer.field("createdAt", timestamp: createdAt)
            writer.field("updatedAt", timestamp: updatedAt)
            writer.objectEnd()
        }
    }

    static func response(_ template: NotificationTemplate, type: String, createdAt: Int64, updatedAt: Int64) throws -> Response {
        .json(Stored(type: type, template: template, createdAt: createdAt, updatedAt: updatedAt))
    }

    /// `GET /notification-templates/{type}`.
    @Sendable func show(_ request: Request, context: AuthenticatedContext) async throws -> Response {
        let type = try type(context)
        let tenantId = context.identity.tenantId
        guard
            let (template, createdAt, updatedAt) = try await channels.database.read({ db in
                try await TemplateStore.get(tenantId: tenantId, type: type, on: db)
            })
        else { throw AppError.notFound("This type has no templates.") }
        return try Self.response(template, type: type, createdAt: createdAt, updatedAt: updatedAt)
    }

    /// `PUT /notification-templates/{type}`: replaces the type's templates after checking them.
    @Sendable func replace(_ request: Request, context: AuthenticatedContext) async throws -> Response {
        let type = try type(context)
        var request = request
        let template = try await request.decodeJSON(as: NotificationTemplate.self, context: context)
        try template.validate()
        let tenantId = context.identity.tenantId
        let stored = try await channels.database.write { db in
            try await TemplateStore.put(template, tenantId: tenantId, type: type, on: db)
            return try await TemplateStore.get(tenantId: tenantId, type: type, on: db)
        }
        guard let (saved, createdAt, updatedAt) = stored else { throw StoreInconsistency() }
        return try Self.response(saved, type: type, createdAt: createdAt, updatedAt: updatedAt)
    }

    /// `DELETE /notification-templates/{type}`.
    @Sendable func delete(_ request: Request, context: AuthenticatedContext) async throws -> Response {
        let type = try type(context)
        let tenantId = context.identity.tenantId
        guard try await channels.database.write({ db in try await TemplateStore.delete(tenantId: tenantId, type: type, on: db) }) else {
            throw AppError.notFound("This type has no templates.")
        }
        return Response(status: .noContent)
    }

    /// `POST /notification-templates/{type}/preview {channel, locale?, title?, body?, data?}`:
    /// the rendered parts and the variant used; 400 for a variable the sample lacks.
    @Sendable func preview(_ request: Request, context: AuthenticatedContext) async throws -> Response {
        let type = try type(context)
        var request = request
        let body = try await request.decodeJSON(as: PreviewBody.self, context: context)
        let issues = body.valueIssues()
        guard issues.isEmpty, let channel = TemplateChannel(rawValue: body.channel) else { throw AppError.invalidInput(issues) }
        let tenantId = context.identity.tenantId
        guard let (template, _, _) = try await channels.database.read({ db in try await TemplateStore.get(tenantId: tenantId, type: type, on: db) })
        else { throw AppError.notFound("This type has no templates.") }
        let renderContext = TemplateRenderer.context(title: body.title ?? "", body: body.body ?? "", data: body.data ?? .object([:]))
        let rendered: (tag: String, parts: [String: String])?
        do {
            rendered = try TemplateRenderer.render(template, channel: channel, locale: body.locale, context: renderContext)
        } catch let missing as TemplateVariableMissing {
            throw AppError.invalidField(missing.field, "template_variable_missing: the template uses it and the sample lacks it")
        } catch let failure as any TemplateRenderError {
            throw AppError.invalidField(failure.field, failure.reason)
        }
        guard let rendered else { throw AppError.notFound("This type has no \(channel.rawValue) template.") }
        let answer = JSONValue.object([
            "channel": .string(channel.rawValue), "locale": .string(rendered.tag), "parts": .object(rendered.parts.mapValues { .string($0) }),
        ])
        return Response(status: .ok, headers: [.contentType: "application/json"], body: .init(byteBuffer: ByteBuffer(string: answer.text)))
    }
}

// Value checks run by the body decoder, so one answer lists type and value errors together.

extension NotificationTemplate: ValueChecked {
    func valueIssues() -> [FieldIssue] { issues { try validate() } }
}

extension TemplatesController.PreviewBody: ValueChecked {
    func valueIssues() -> [FieldIssue] {
        var issues: [FieldIssue] = []
        if TemplateChannel(rawValue: channel) == nil { issues.append(FieldIssue(field: "channel", issue: "must be email, sms or push")) }
        if let locale, !NotificationTemplate.isLanguageTag(locale) {
            issues.append(FieldIssue(field: "locale", issue: "must be a BCP 47 language tag"))
        }
        return issues
    }
}
