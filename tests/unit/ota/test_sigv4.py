"""ota/sigv4.py against AWS's published S3 example, and its refusals."""

from __future__ import annotations

import pytest

from ota.sigv4 import EMPTY_SHA256, Credentials, canonical_request, query_string, sign

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


# Two more examples from the same page, with a query: "GET Bucket Lifecycle" (a parameter
# without a value) and "Get Bucket (List Objects)" (two parameters given out of order).
BUCKET_HEADERS = {k: v for k, v in HEADERS.items() if k != "Range"}


@pytest.mark.parametrize(
    ("query", "signature"),
    [
        ({"lifecycle": ""}, "fea454ca298b7da1c68078a5d1bdbfbbe0d65c699e0f91ac7a200a0136783543"),
        (
            {"prefix": "J", "max-keys": "2"},
            "34b48302e7b5fa45bde8084f4b7868a86f0a534bc59db6670ed5711ef69dc6f7",
        ),
    ],
)
def test_the_published_query_examples_sign_to_their_signatures(
    query: dict[str, str], signature: str
) -> None:
    header = sign("GET", "/", BUCKET_HEADERS, credentials=EXAMPLE, region="us-east-1", query=query)
    assert header.endswith(f"Signature={signature}")


def test_the_canonical_request_of_an_upload_part() -> None:
    """Worked by hand from the documented algorithm: the parameters sorted by name
    (partNumber before uploadId), each value encoded on its own (`/` `+` `=` too)."""
    headers = {
        "host": "minio:9000",
        "x-amz-content-sha256": "ab" * 32,
        "x-amz-date": "20261206T120000Z",
        "content-length": "5242880",
    }
    query = {"uploadId": "2~Zx/y+z=", "partNumber": "2"}
    canonical, signed = canonical_request("PUT", "/ota-packages/sha256/ab12", headers, query)
    assert signed == "content-length;host;x-amz-content-sha256;x-amz-date"
    assert canonical == (
        "PUT\n"
        "/ota-packages/sha256/ab12\n"
        "partNumber=2&uploadId=2~Zx%2Fy%2Bz%3D\n"
        "content-length:5242880\n"
        "host:minio:9000\n"
        f"x-amz-content-sha256:{'ab' * 32}\n"
        "x-amz-date:20261206T120000Z\n"
        "\n"
        "content-length;host;x-amz-content-sha256;x-amz-date\n"
        f"{'ab' * 32}"
    )


def test_the_query_string_sorts_encoded_names_in_byte_order() -> None:
    # Upper case sorts before lower case; "uploadId" before "uploads" ('I' < 's'); an
    # empty value keeps its '='; a space is %20, never '+'.
    query = {"uploads": "", "uploadId": "x", "a b": "c d", "Zeta": "1"}
    assert query_string(query) == "Zeta=1&a%20b=c%20d&uploadId=x&uploads="
    assert query_string({}) == ""


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
