"""Analytics: what visitors ask, what the content misses, which sources earn their place."""
