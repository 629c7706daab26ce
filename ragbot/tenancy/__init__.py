"""Bots, keys, visitor sessions and rate limits: who may use which bot, and how much."""
