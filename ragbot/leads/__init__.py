"""Leads: the contact form a bot may offer, validated and stored once per email per bot."""
