"""ota/sigv4.py against AWS's published S3 example, and its refusals."""

from __future__ import annotations

import pytest

from ota.sigv4 import EMPTY_SHA256, Credentials, sign

# The "GET Object" example of the S3 API reference ("Signature Calculations for the
# Authorization Header: Transferring Payload in a Single Chunk").
EXAMPLE = Credentials("AKIAIOSFODNN7EXAMPLE", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY")
HEADERS = {
    "Host": "examplebucket.s3.amazonaws.com",
    "Range": "bytes=0-9",
    "x-amz-content-sha256": EMPTY_SHA256,
    "x-amz-date": "20130524T000000Z",
}


def test_the_published_example_signs_to_the_published_signature() -> None:
    header = sign("GET", "/test.txt", HEADERS, credentials=EXAMPLE, region="us-east-1")
    assert header == (
        "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request, "
        "SignedHeaders=host;range;x-amz-content-sha256;x-amz-date, "
        "Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41"
    )


def test_every_input_changes_the_signature() -> None:
    base = sign("GET", "/test.txt", HEADERS, credentials=EXAMPLE, region="us-east-1")
    variants = [
        sign("HEAD", "/test.txt", HEADERS, credentials=EXAMPLE, region="us-east-1"),
        sign("GET", "/other.txt", HEADERS, credentials=EXAMPLE, region="us-east-1"),
        sign(
            "GET",
            "/test.txt",
            {**HEADERS, "Range": "bytes=0-8"},
            credentials=EXAMPLE,
            region="us-east-1",
        ),
        sign("GET", "/test.txt", HEADERS, credentials=EXAMPLE, region="eu-west-1"),
        sign(
            "GET",
            "/test.txt",
            HEADERS,
            credentials=Credentials("AKIAIOSFODNN7EXAMPLE", "x"),
            region="us-east-1",
        ),
    ]
    assert len({base, *variants}) == 1 + len(variants)


@pytest.mark.parametrize("absent", ["Host", "x-amz-date", "x-amz-content-sha256"])
def test_a_required_header_missing_is_refused(absent: str) -> None:
    headers = {k: v for k, v in HEADERS.items() if k != absent}
    with pytest.raises(ValueError, match=absent.lower()):
        sign("GET", "/test.txt", headers, credentials=EXAMPLE, region="us-east-1")


def test_the_secret_key_never_shows_in_a_repr() -> None:
    assert EXAMPLE.secret_key not in repr(EXAMPLE)
