"""The SSRF address policy and URL vetting, as pure functions (no socket is opened, no name resolved)."""

from __future__ import annotations

import ipaddress
import socket

import pytest

from connectors.net import (
    AddressRefusedError,
    FetchError,
    SafeHttpClient,
    StaticResolver,
    address_refusal,
)

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("127.0.0.1", "loopback"),
        ("127.8.9.10", "loopback"),
        ("::1", "loopback"),
        ("10.1.2.3", "private"),
        ("172.16.0.5", "private"),
        ("192.168.1.1", "private"),
        ("fd12:3456::1", "private"),
        ("169.254.1.1", "link-local"),
        ("fe80::1", "link-local"),
        ("169.254.169.254", "cloud metadata"),
        ("fd00:ec2::254", "cloud metadata"),
        ("100.100.100.200", "cloud metadata"),
        ("168.63.129.16", "cloud metadata"),
        ("100.64.0.1", "non-public"),
        ("0.0.0.0", "unspecified"),
        ("::", "unspecified"),
        ("224.0.0.1", "multicast"),
        ("ff02::1", "multicast"),
        ("240.0.0.1", "reserved"),
        ("255.255.255.255", "reserved"),
        ("::ffff:127.0.0.1", "loopback"),  # IPv4-mapped
        ("::ffff:169.254.169.254", "cloud metadata"),
        ("2002:a9fe:a9fe::1", "cloud metadata"),  # 6to4 wrapping 169.254.169.254
        ("64:ff9b::a00:1", "private"),  # NAT64 wrapping 10.0.0.1
    ],
)
def test_internal_addresses_are_refused(address: str, reason: str) -> None:
    refusal = address_refusal(ipaddress.ip_address(address))
    assert refusal is not None
    assert reason in refusal


@pytest.mark.parametrize("address", ["93.184.216.34", "1.1.1.1", "2606:4700:4700::1111", "::ffff:8.8.8.8"])
def test_public_addresses_pass(address: str) -> None:
    assert address_refusal(ipaddress.ip_address(address)) is None


def test_allow_private_opens_intranets_but_never_metadata_or_nonsense() -> None:
    def allowed(address: str) -> bool:
        return address_refusal(ipaddress.ip_address(address), allow_private=True) is None

    assert allowed("127.0.0.1")
    assert allowed("10.0.0.8")
    assert allowed("169.254.7.7")
    assert not allowed("169.254.169.254")
    assert not allowed("fd00:ec2::254")
    assert not allowed("0.0.0.0")
    assert not allowed("224.0.0.1")


def test_allowed_networks_open_one_subnet_only() -> None:
    intranet = [ipaddress.ip_network("10.20.0.0/16")]
    assert address_refusal(ipaddress.ip_address("10.20.3.4"), allowed_networks=intranet) is None
    assert address_refusal(ipaddress.ip_address("10.21.3.4"), allowed_networks=intranet) is not None
    wide = [ipaddress.ip_network("169.254.0.0/16")]
    assert address_refusal(ipaddress.ip_address("169.254.169.254"), allowed_networks=wide) is not None


@pytest.fixture
def no_dns(monkeypatch: pytest.MonkeyPatch) -> None:
    """Vetting must go through the resolver seam only: any system lookup fails the test."""

    def forbidden(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"system DNS lookup attempted: {args}")

    monkeypatch.setattr(socket, "getaddrinfo", forbidden)


def client(**options: object) -> SafeHttpClient:
    resolver = StaticResolver(
        {
            "intranet.example": ["10.0.0.7"],
            "metadata.example": ["169.254.169.254"],
            "mixed.example": ["93.184.216.34", "192.168.0.9"],
            "public.example": ["93.184.216.34"],
        }
    )
    return SafeHttpClient(user_agent="test", timeout_s=1, max_bytes=1000, resolver=resolver, **options)  # type: ignore[arg-type]


@pytest.mark.usefixtures("no_dns")
@pytest.mark.parametrize(
    ("url", "needle"),
    [
        ("http://127.0.0.1/admin", "127.0.0.1, a loopback address"),
        ("http://169.254.169.254/latest/meta-data/", "cloud metadata"),
        ("http://[::1]:8080/", "loopback"),
        ("http://intranet.example/wiki", "intranet.example resolves to 10.0.0.7, a private address"),
        ("http://metadata.example/", "169.254.169.254, a cloud metadata address"),
        ("http://mixed.example/", "192.168.0.9"),  # one internal answer taints the name
        ("http://metadata.google.internal/computeMetadata/v1/", "cloud metadata host name"),
    ],
)
def test_vet_refuses_before_any_connection(url: str, needle: str) -> None:
    with client() as http, pytest.raises(AddressRefusedError, match="refused") as error:
        http.vet(url)
    assert needle in str(error.value)
    # The hint to allow private addresses appears only where that setting would help.
    assert ("--allow-private" in str(error.value)) == ("metadata" not in needle)


@pytest.mark.usefixtures("no_dns")
def test_vet_returns_the_address_to_dial() -> None:
    with client() as http:
        url, ip = http.vet("https://public.example/page?q=1")
    assert str(ip) == "93.184.216.34"
    assert url.host == "public.example"
    with client(allow_private=True) as http:
        assert str(http.vet("http://intranet.example/")[1]) == "10.0.0.7"
        with pytest.raises(AddressRefusedError):
            http.vet("http://metadata.example/")


@pytest.mark.usefixtures("no_dns")
@pytest.mark.parametrize(
    ("url", "needle"),
    [
        ("ftp://public.example/file", "unsupported URL scheme"),
        ("file:///etc/passwd", "unsupported URL scheme"),
        ("http://unknown.example/", "cannot resolve"),
    ],
)
def test_vet_rejects_other_schemes_and_unknown_hosts(url: str, needle: str) -> None:
    with client() as http, pytest.raises(FetchError, match=needle):
        http.vet(url)
