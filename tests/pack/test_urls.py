"""urls.public_url: no credentials in provenance or messages."""

from __future__ import annotations

import pytest

from conda_pixi_pack.pack.urls import public_url


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://conda.anaconda.org/conda-forge/linux-64/a.conda", None),
        (
            "https://user:s3cret@repo.example.com/ch/linux-64/a.conda",
            "https://repo.example.com/ch/linux-64/a.conda",
        ),
        ("http://token@127.0.0.1:8080/ch/", "http://127.0.0.1:8080/ch/"),
        (
            "https://conda.anaconda.org/t/ab-12cd/private/noarch/a.conda",
            "https://conda.anaconda.org/private/noarch/a.conda",
        ),
        ("file:///tmp/channel/linux-64/a.conda", None),
        ("/tmp/channel/linux-64/a.conda", None),
    ],
    ids=["plain", "user-password", "user-only-with-port", "anaconda-token", "file-url", "path"],
)
def test_public_url(url: str, expected: str | None) -> None:
    assert public_url(url) == (expected or url)
