"""Human handoff: who owns a conversation (the bot or people), how it moves, and the agent side."""
