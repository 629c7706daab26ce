"""Live delivery of conversation events to waiting streams, in one process or across many."""
