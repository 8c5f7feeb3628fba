import CairnAccounts
import CairnHTTP
import CairnServer
import CairnTestSupport
import Foundation
import HTTPTypes
import HummingbirdTesting
import Testing

@Suite("Accounts: invisible and bidirectional characters")
struct InvisibleCharacterTests {
    /// The fields a 400 names.
    static func fields(_ response: TestResponse) -> [String] {
        (response.object["errors"] as? [[String: Any]])?.compactMap { $0["field"] as? String } ?? []
    }

    /// Emails refuse every invisible character (`U+200B`, `U+202E`, soft hyphen, BOM); user and
    /// tenant names refuse bidirectional controls, on registration and on every profile change,
    /// while an emoji's zero-width joiner stays allowed in a name.
    @Test(arguments: TestEngine.available)
    func emailsRefuseInvisibleCharactersAndNamesRefuseBidiControls(engine: TestEngine) async throws {
        try await withTestApp(engine) { client, _ in
            for email in [
                "zero\u{200B}width@example.com", "evil\u{202E}moc.elpmaxe@example.com", "soft\u{AD}hyphen@example.com", "\u{FEFF}bom@example.com",
            ] {
                let refused = try await client.json(.post, "/auth/register", ["email": email, "password": "correct horse battery", "name": "N"])
                #expect(refused.status == .badRequest, "\(email.unicodeScalars.map { String($0.value, radix: 16) })")
                #expect(Self.fields(refused) == ["email"])
            }
            for name in ["Mallory\u{202E}nimdA", "Isolate\u{2066}x\u{2069}", "Mark\u{200F}"] {
                let refused = try await client.json(
                    .post, "/auth/register", ["email": "n@example.com", "password": "correct horse battery", "name": name])
                #expect(Self.fields(refused) == ["name"], "\(name)")
                let tenant = try await client.json(
                    .post, "/auth/register", ["email": "n@example.com", "password": "correct horse battery", "name": "N", "tenantName": name])
                #expect(Self.fields(tenant) == ["tenantName"], "\(name)")
            }
            let (user, tokens) = try await client.registerAndLogin(email: "ok@example.com", name: "Zoë 👩\u{200D}💻")
            #expect(user.name == "Zoë 👩\u{200D}💻")
            let patched = try await client.json(.patch, "/users/me", ["name": "Eve\u{202E}"], token: tokens.accessToken)
            #expect(patched.status == .badRequest)
            #expect(Self.fields(patched) == ["name"])
            let email = try await client.json(
                .patch, "/users/me", ["email": "ok\u{200B}@example.com", "currentPassword": "correct horse battery"], token: tokens.accessToken)
            #expect(Self.fields(email) == ["email"])
            let byAdmin = try await client.json(
                .post, "/users", ["email": "m\u{2060}@example.com", "name": "M\u{202D}", "role": "member", "password": "correct horse battery"],
                token: tokens.accessToken)
            #expect(Self.fields(byAdmin) == ["email", "name"])
        }
    }

    /// The shared rule itself: bidi controls are exactly UAX #9's; invisibles include them.
    @Test func theSharedRuleKnowsBidiControlsAndInvisibles() {
        for scalar: Unicode.Scalar in ["\u{061C}", "\u{200E}", "\u{200F}", "\u{202A}", "\u{202E}", "\u{2066}", "\u{2069}"] {
            #expect(TextSafety.isBidiControl(scalar))
            #expect(TextSafety.isInvisible(scalar))
        }
        for scalar: Unicode.Scalar in ["\u{200B}", "\u{200D}", "\u{2060}", "\u{FEFF}", "\u{AD}", "\u{0}", "\u{3164}", "\u{FE0F}"] {
            #expect(TextSafety.isInvisible(scalar), "\(scalar.value)")
            #expect(!TextSafety.isBidiControl(scalar))
        }
        for scalar: Unicode.Scalar in ["a", "é", "ß", "\u{05D0}", "👩"] { #expect(!TextSafety.isInvisible(scalar)) }
    }
}
