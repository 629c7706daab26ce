"""Privacy: redacting what visitors type, retention, and forgetting one person everywhere."""
