"""The URL policy of the images stage: which addresses and schemes are refused, before any connection."""
import pytest

from pipeline.images.safety import FetchPolicy, Refused, address_problem, check_image, fetch, mirrored, parse_allow
from pipeline.images.schema import image_id, parse_mirror


@pytest.mark.parametrize("ip,what", [
    ("127.0.0.1", "loopback"), ("::1", "loopback"), ("10.1.2.3", "private"), ("192.168.0.7", "private"),
    ("172.16.5.5", "private"), ("169.254.169.254", "metadata"), ("169.254.1.1", "link-local"),
    ("fd00:ec2::254", "metadata"), ("fe80::1", "link-local"), ("0.0.0.0", "unspecified"),
    ("100.64.0.1", "not a public"), ("224.0.0.1", "multicast"), ("::ffff:127.0.0.1", "loopback"),
    ("100.100.100.200", "metadata"),
])
def test_non_public_addresses_are_refused(ip, what):
    assert what in address_problem(ip, FetchPolicy())


def test_public_addresses_pass_and_the_allow_list_is_explicit():
    assert address_problem("93.184.215.14", FetchPolicy()) is None
    assert address_problem("2606:4700::1", FetchPolicy()) is None
    allow = FetchPolicy(allow=parse_allow(["127.0.0.1", "10.0.0.0/8"]))
    assert address_problem("127.0.0.1", allow) is None and address_problem("10.9.9.9", allow) is None
    assert "loopback" in address_problem("127.0.0.2", allow)
    assert "metadata" in address_problem("169.254.169.254", allow)  # only when listed itself
    with pytest.raises(ValueError, match="not-an-ip"):
        parse_allow(["not-an-ip"])


@pytest.mark.parametrize("url", ["file:///etc/passwd", "ftp://example.com/a.jpg", "data:image/png;base64,AAAA",
                                 "gopher://x/", "/relative/path.jpg"])
def test_non_http_schemes_are_refused_without_a_connection(url):
    with pytest.raises(Refused) as e:
        fetch(url, FetchPolicy())
    assert e.value.reason == "image:refused_scheme"


def test_a_host_that_resolves_to_loopback_is_refused_before_connecting():
    with pytest.raises(Refused) as e:
        fetch("http://localhost:9/x.jpg", FetchPolicy())
    assert e.value.reason == "image:refused_address" and "localhost" in e.value.detail


def test_not_an_image_and_mirrors_and_ids():
    with pytest.raises(Refused, match="HTML page") as e:
        check_image(b"<!DOCTYPE html><html></html>", 100)
    assert e.value.reason == "image:not_an_image"
    p = FetchPolicy(mirrors=(parse_mirror("https://a.example/=http://127.0.0.1:8/a.example/"),))
    assert mirrored("https://a.example/x/1.jpg", p) == "http://127.0.0.1:8/a.example/x/1.jpg"
    assert mirrored("https://b.example/1.jpg", p) == "https://b.example/1.jpg"
    with pytest.raises(ValueError, match="ORIGINAL_PREFIX=MIRROR_PREFIX"):
        parse_mirror("no-equals-sign")
    import hashlib

    url = "https://images.example.org/pixmo/001000.jpg"
    assert image_id(url) == hashlib.sha256(url.encode()).hexdigest()  # = PixMo's caption id
    assert image_id(None, None, "AB" * 32) == "ab" * 32
    assert image_id(None, "a.jpg") != image_id(None, "b.jpg") and image_id(None, None, None) is None
