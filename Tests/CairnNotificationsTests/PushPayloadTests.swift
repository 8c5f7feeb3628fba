import CairnHTTP
import Foundation
import Testing

@testable import CairnNotifications
@testable import CairnOutbound

@Suite("Notifications: push payloads fit the providers' 4 KB")
struct PushPayloadTests {
    private func message(title: String, body: String, data: JSONValue = .object(["orderId": .number(42)])) -> OutboundMessage {
        OutboundMessage(
            notificationId: "01900000-0000-7000-8000-000000000001", deliveryId: "01900000-0000-7000-8000-000000000002", type: "message",
            title: title, body: body, data: data)
    }

    private func object(_ text: String) throws -> [String: Any] {
        try #require(try JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any])
    }

    @Test func aSmallNotificationGoesWhole() throws {
        let apns = try object(APNsProvider.payload(message(title: "Hi", body: "There")))
        #expect((apns["data"] as? [String: Any])?["orderId"] as? Int == 42)
        #expect(((apns["aps"] as? [String: Any])?["alert"] as? [String: Any])?["body"] as? String == "There")
        let fcm = try object(FCMProvider.payload(message(title: "Hi", body: "There"), token: "t"))
        let data = try #require((fcm["message"] as? [String: Any])?["data"] as? [String: String])
        #expect(data["data"] == #"{"orderId":42}"#)
    }

    @Test func aLongOneIsCutAtACharacterWithinTheLimit() throws {
        let title = String(repeating: "T", count: 200)
        let body = String(repeating: "é\"", count: 5000)  // 2-byte characters and quotes that JSON escapes
        let big = JSONValue.object(["blob": .string(String(repeating: "x", count: 10_000))])
        let apnsText = APNsProvider.payload(message(title: title, body: body, data: big))
        #expect(apnsText.utf8.count <= 4096)
        let apns = try object(apnsText)
        let alert = try #require((apns["aps"] as? [String: Any])?["alert"] as? [String: Any])
        #expect(alert["title"] as? String == title)
        let cut = try #require(alert["body"] as? String)
        #expect(cut.hasSuffix("…") && body.hasPrefix(String(cut.dropLast())))
        #expect(apns["data"] == nil, "data that does not fit is left for the client to fetch")
        #expect(apns["notificationId"] as? String == "01900000-0000-7000-8000-000000000001")

        let token = String(repeating: "k", count: 300)
        let fcmText = FCMProvider.payload(message(title: title, body: body, data: big), token: token)
        #expect(fcmText.utf8.count <= 4096)
        let fcm = try #require(try object(fcmText)["message"] as? [String: Any])
        #expect(fcm["token"] as? String == token)
        #expect(((fcm["notification"] as? [String: Any])?["body"] as? String)?.hasSuffix("…") == true)
        #expect((fcm["data"] as? [String: String])?["notificationId"] == "01900000-0000-7000-8000-000000000001")
    }

    @Test func theBodyIsCutToTheLongestPrefixThatFits() throws {
        // Every body length around the limit: the result fits, and one character more would not.
        for length in stride(from: 3900, through: 4200, by: 7) {
            let body = String(repeating: "東", count: length / 3)
            let text = APNsProvider.payload(message(title: "t", body: body, data: .object([:])))
            #expect(text.utf8.count <= 4096)
            let cut = try #require(((try object(text)["aps"] as? [String: Any])?["alert"] as? [String: Any])?["body"] as? String)
            if cut != body {
                #expect(cut.hasSuffix("…"))
                #expect(text.utf8.count > 4096 - 3 - 3, "about one character short of the limit, not much less")
            }
        }
    }
}
