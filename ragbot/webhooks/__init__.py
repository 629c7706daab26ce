"""Webhooks out: subscriptions, a transactional outbox, Standard Webhooks signing, a delivery worker."""
