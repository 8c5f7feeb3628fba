import CairnJobs

/// The arguments of an outbound delivery job, `{"deliveryId"}`: the `notification_deliveries`
/// row it carries out. Deliveries run on the `notifications` queue.
protocol DeliveryJob: JobArguments {
    /// The delivery record's id.
    var deliveryId: String { get }
    /// Arguments for the delivery record `deliveryId`.
    init(deliveryId: String)
}

extension DeliveryJob {
    static var defaultQueue: String { "notifications" }
}

/// Delivers one webhook to one endpoint (`notifications.webhook`).
struct SendWebhook: DeliveryJob {
    static let kind = "notifications.webhook"
    var deliveryId: String
}

/// Sends one email through the tenant's email provider (`notifications.email`).
struct SendEmail: DeliveryJob {
    static let kind = "notifications.email"
    var deliveryId: String
}

/// Sends one push notification to one device (`notifications.push`).
struct SendPush: DeliveryJob {
    static let kind = "notifications.push"
    var deliveryId: String
}

/// Sends one SMS to the user's phone (`notifications.sms`).
struct SendSMS: DeliveryJob {
    static let kind = "notifications.sms"
    var deliveryId: String
}

/// Sends one digest: the notifications a user batched for one type, channel (and device) over
/// one hourly or daily window, as one message, at the window's end (`notifications.digest`).
struct SendDigest: JobArguments {
    static let kind = "notifications.digest"
    static var defaultQueue: String { "notifications" }
    /// The `notification_digests` row.
    var digestId: String
}
