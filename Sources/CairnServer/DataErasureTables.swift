package import CairnAccounts

extension DataErasure {
    /// Every module's tables holding a user's or a tenant's rows, deleted by `DELETE /users/me`
    /// (and `?tenant=delete`) and `DELETE /users/{id}`. The accounts module deletes its own
    /// tables itself. `AccountDeletionTests` checks that every table with a `user_id` or
    /// `tenant_id` column in the migrated schema is listed, so a new table cannot be forgotten.
    /// File bytes in the object store go with their `files` rows: the orphan sweeper removes
    /// blobs no row names once its grace has passed.
    package static let cairn = DataErasure(
        userTables: [
            // CairnNotifications: the inbox, its counters, preferences, deliveries and push devices.
            "notification_deliveries", "notification_digests", "notifications", "notification_counters", "notification_preferences",
            "notification_devices",
        ],
        tenantTables: [
            "notification_deliveries", "notification_digests", "notifications", "notification_counters", "notification_preferences",
            "notification_devices", "notification_templates", "notification_providers", "webhook_endpoints",
            "tasks",
            "product_imports", "products",
            "pipelines",
            "uploads", "files", "file_upload_usage",
            "schedules", "jobs",
            "idempotency_keys",
        ])
}
