"""The website widget: its script, the demo and embed pages, and the visitor-session route."""
