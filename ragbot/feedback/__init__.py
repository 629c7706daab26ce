"""Feedback: thumbs up or down on a bot answer, tied to the retrieval behind it."""
