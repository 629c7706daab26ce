"""Adapters that let other frameworks use ragbot's retrieval (imported on demand, never by ragbot itself)."""
