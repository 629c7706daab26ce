"""The agent inbox: a plain HTML/JS page (no build step) over the agent API."""
