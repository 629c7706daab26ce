"""SSRF-safe HTTP for the crawler.

A crawler fetches URLs that strangers control (links, redirects, sitemaps), so every hop is vetted:
the host is resolved through a ``Resolver`` seam, every address it resolves to is checked against the
address policy, and the request then goes to the vetted IP itself (the original host travels in the
``Host`` header and as the TLS server name), so a second DNS answer cannot swap in another address
between the check and the connect (DNS rebinding). Redirects are followed by hand, one vetted hop at a time.

Loopback, private, link-local, shared (CGNAT), multicast, reserved and unspecified addresses are
refused unless ``allow_private`` is set (intranets, tests) or the address is inside an explicitly
allowed network; cloud metadata endpoints are refused always.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol
from urllib.parse import urljoin

import httpx

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

#: Instance metadata services (AWS, AWS ECS/EKS, GCP, Azure, Alibaba, Oracle and OpenStack share the first).
METADATA_ADDRESSES: frozenset[IPAddress] = frozenset(
    ipaddress.ip_address(a)
    for a in (
        "169.254.169.254",
        "169.254.170.2",
        "169.254.170.23",
        "fd00:ec2::254",
        "fd00:ec2::23",
        "100.100.100.200",
        "168.63.129.16",
    )
)
METADATA_HOSTNAMES = frozenset(
    {"metadata", "metadata.google.internal", "metadata.goog", "instance-data", "instance-data.ec2.internal"}
)
_REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_ALLOW_HINT = "RAGBOT_CRAWL_ALLOW_PRIVATE=true or --allow-private"


class FetchError(Exception):
    """A URL that could not be fetched; ``str(error)`` is the reason shown in the ingest report."""


class AddressRefusedError(FetchError):
    """The URL resolves to an address the policy forbids; nothing was sent to it."""


class ResponseTooLargeError(FetchError):
    pass


class UnsupportedContentTypeError(FetchError):
    pass


class RedirectNotFollowedError(FetchError):
    """A redirect led somewhere the caller does not want to go (another site, a refused URL)."""

    def __init__(self, reason: str, location: str) -> None:
        super().__init__(reason)
        self.location = location


def _embedded_ipv4(ip: IPAddress) -> ipaddress.IPv4Address | None:
    """The IPv4 address hidden in an IPv4-mapped, 6to4, Teredo or NAT64 IPv6 address."""
    if not isinstance(ip, ipaddress.IPv6Address):
        return None
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip.teredo is not None:
        return ip.teredo[1]
    if ip in _NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def address_refusal(
    ip: IPAddress, *, allow_private: bool = False, allowed_networks: Iterable[IPNetwork] = ()
) -> str | None:
    """Why ``ip`` must not be dialed, or None when it may. Pure: the whole SSRF policy in one place."""
    embedded = _embedded_ipv4(ip)
    if embedded is not None:
        reason = address_refusal(embedded, allow_private=allow_private, allowed_networks=allowed_networks)
        return f"{reason} (embedded in {ip})" if reason else None
    if ip in METADATA_ADDRESSES:
        return "a cloud metadata address"
    if ip.is_unspecified:
        return "an unspecified address"
    if ip.is_multicast:
        return "a multicast address"
    if ip.is_reserved and not ip.is_loopback:  # IPv6 ::1 sits inside the reserved ::/8
        return "a reserved address"
    if allow_private or any(ip in net for net in allowed_networks if net.version == ip.version):
        return None
    if ip.is_loopback:
        return "a loopback address"
    if ip.is_link_local:
        return "a link-local address"
    if ip.is_private:
        return "a private address"
    if not ip.is_global:
        return "a non-public address"
    return None


class Resolver(Protocol):
    """Host name -> addresses. The seam tests use to point names at private addresses without DNS."""

    def resolve(self, host: str, port: int) -> list[IPAddress]: ...


class SystemResolver:
    def resolve(self, host: str, port: int) -> list[IPAddress]:
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except socket.gaierror as exc:
            raise FetchError(f"cannot resolve host {host!r}: {exc.strerror}") from exc
        addresses: list[IPAddress] = []
        for _, _, _, _, sockaddr in infos:
            ip = ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0])
            if ip not in addresses:
                addresses.append(ip)
        return addresses


class StaticResolver:
    """A fixed name -> addresses table; unknown names fail as they would in DNS. Sends nothing anywhere."""

    def __init__(self, table: Mapping[str, Sequence[str]]) -> None:
        self._table = {
            name.lower(): [ipaddress.ip_address(a) for a in addrs] for name, addrs in table.items()
        }

    def resolve(self, host: str, port: int) -> list[IPAddress]:
        try:
            return list(self._table[host.lower()])
        except KeyError:
            raise FetchError(f"cannot resolve host {host!r}") from None


@dataclass(frozen=True, slots=True)
class HttpResponse:
    url: str  # after redirects
    status: int
    headers: httpx.Headers
    content: bytes
    redirects: tuple[str, ...] = ()  # the URLs that redirected, in order

    @property
    def content_type(self) -> str:
        return str(self.headers.get("content-type", ""))


class SafeHttpClient:
    """GET with the SSRF policy, a redirect limit, a size limit and a content-type allow-list. Thread-safe."""

    def __init__(
        self,
        *,
        user_agent: str,
        timeout_s: float,
        max_bytes: int,
        max_redirects: int = 5,
        allow_private: bool = False,
        allowed_networks: Iterable[str] = (),
        resolver: Resolver | None = None,
        max_connections: int = 8,
    ) -> None:
        self._allow_private = allow_private
        self._allowed_networks = tuple(ipaddress.ip_network(n, strict=False) for n in allowed_networks)
        self._resolver = resolver or SystemResolver()
        self._max_bytes = max_bytes
        self._max_redirects = max_redirects
        # trust_env=False: an HTTP(S)_PROXY from the environment would dial hosts we never vetted.
        self._client = httpx.Client(
            headers={"User-Agent": user_agent},
            timeout=httpx.Timeout(timeout_s),
            follow_redirects=False,
            trust_env=False,
            limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections),
        )

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> SafeHttpClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def vet(self, url: str) -> tuple[httpx.URL, IPAddress]:
        """Parse and resolve ``url``; return it with the address to dial, or raise ``AddressRefusedError``."""
        try:
            parsed = httpx.URL(url)
        except (httpx.InvalidURL, ValueError) as exc:
            raise FetchError(f"invalid URL {url!r}: {exc}") from exc
        if parsed.scheme not in ("http", "https"):
            raise FetchError(f"unsupported URL scheme {parsed.scheme!r} in {url}")
        host = parsed.host.rstrip(".").lower()
        if not host:
            raise FetchError(f"URL has no host: {url}")
        if host in METADATA_HOSTNAMES:
            raise AddressRefusedError(f"refused {url}: {host} is a cloud metadata host name")
        port = parsed.port or (443 if parsed.scheme == "https" else 80)
        try:
            addresses: list[IPAddress] = [ipaddress.ip_address(host)]
        except ValueError:
            addresses = self._resolver.resolve(host, port)
        if not addresses:
            raise FetchError(f"cannot resolve host {host!r}")
        # Every answer must pass: a name that also resolves to an internal address is not trusted at all.
        for ip in addresses:
            reason = address_refusal(
                ip, allow_private=self._allow_private, allowed_networks=self._allowed_networks
            )
            if reason:
                liftable = address_refusal(ip, allow_private=True) is None
                hint = f" (allowed only with {_ALLOW_HINT})" if liftable else ""
                raise AddressRefusedError(f"refused {url}: {host} resolves to {ip}, {reason}{hint}")
        return parsed, addresses[0]

    def get(
        self,
        url: str,
        *,
        headers: Mapping[str, str] | None = None,
        accept: Callable[[str], bool] | None = None,
        follow: Callable[[str], str | None] | None = None,
        max_bytes: int | None = None,
    ) -> HttpResponse:
        """GET ``url``, following redirects through ``vet`` at every hop.

        ``accept(content_type)`` rejects a 200 body before it is downloaded; ``follow(location)`` returns
        a reason to stop at a redirect (another site, say) or None to follow it.
        """
        limit = max_bytes or self._max_bytes
        current, redirects = url, []
        for _ in range(self._max_redirects + 1):
            target, ip = self.vet(current)
            response = self._send(target, ip, headers or {})
            try:
                location = response.headers.get("location")
                if response.status_code in _REDIRECT_STATUSES and location:
                    next_url = urljoin(current, location.strip())
                    refusal = follow(next_url) if follow else None
                    if refusal:
                        raise RedirectNotFollowedError(
                            f"{current} redirects to {next_url}: {refusal}", next_url
                        )
                    redirects.append(current)
                    current = next_url
                    continue
                content_type = response.headers.get("content-type", "")
                if response.status_code == 200 and accept is not None and not accept(content_type):
                    raise UnsupportedContentTypeError(
                        f"unsupported content type {content_type or '(none)'!r}"
                    )
                content = self._read(response, limit) if response.status_code != 304 else b""
                return HttpResponse(
                    current, response.status_code, response.headers, content, tuple(redirects)
                )
            except httpx.HTTPError as exc:
                raise FetchError(f"{type(exc).__name__} reading {current}: {exc}") from exc
            finally:
                response.close()
        raise FetchError(f"more than {self._max_redirects} redirects starting at {url}")

    def _send(self, target: httpx.URL, ip: IPAddress, headers: Mapping[str, str]) -> httpx.Response:
        host_header = target.netloc.decode("ascii")
        request = self._client.build_request(
            "GET",
            target.copy_with(host=str(ip)),
            headers={**headers, "Host": host_header},
            extensions={"sni_hostname": target.host} if target.scheme == "https" else {},
        )
        try:
            return self._client.send(request, stream=True)
        except httpx.TimeoutException as exc:
            raise FetchError(f"timed out fetching {target}") from exc
        except httpx.HTTPError as exc:
            raise FetchError(f"cannot fetch {target}: {exc or type(exc).__name__}") from exc

    @staticmethod
    def _read(response: httpx.Response, limit: int) -> bytes:
        declared = response.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            raise ResponseTooLargeError(f"response is {declared} bytes, over the {limit}-byte limit")
        body = bytearray()
        for part in response.iter_bytes():
            body += part
            if len(body) > limit:
                raise ResponseTooLargeError(f"response exceeds the {limit}-byte limit")
        return bytes(body)
