"""robots.txt for one host (RFC 9309, via protego: longest-match Allow/Disallow, wildcards, float delays)."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

from protego import Protego


def robots_url(url: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, "/robots.txt", "", ""))


def agent_token(user_agent: str) -> str:
    """The product token robots.txt groups match: ``ragbot-crawler/0.1 (+url)`` -> ``ragbot-crawler``."""
    return user_agent.split("/", 1)[0].split(" ", 1)[0].strip() or user_agent


@dataclass(frozen=True, slots=True)
class RobotsPolicy:
    parser: Protego | None = None  # None: no usable robots.txt
    blocked_reason: str | None = (
        None  # set: crawl nothing on this host (robots.txt unreachable, 5xx, refused)
    )

    @classmethod
    def allow_all(cls) -> RobotsPolicy:
        return cls()

    @classmethod
    def block(cls, reason: str) -> RobotsPolicy:
        return cls(blocked_reason=reason)

    @classmethod
    def parse(cls, text: str) -> RobotsPolicy:
        return cls(parser=Protego.parse(text))

    def can_fetch(self, url: str, agent: str) -> bool:
        if self.blocked_reason is not None:
            return False
        return self.parser is None or bool(self.parser.can_fetch(url, agent))

    def delay_s(self, agent: str) -> float | None:
        """Seconds between requests the site asks for (Crawl-delay, else Request-rate); None if unsaid."""
        if self.parser is None:
            return None
        delay = self.parser.crawl_delay(agent)
        if delay is not None:
            return max(0.0, float(delay))
        rate = self.parser.request_rate(agent)
        if rate is not None and rate.requests > 0:
            return float(rate.seconds) / float(rate.requests)
        return None

    def sitemaps(self) -> list[str]:
        return list(self.parser.sitemaps) if self.parser is not None else []
