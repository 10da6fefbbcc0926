"""URLs fit to keep or show: credentials removed.

A lock may name packages by URLs that carry secrets (``https://user:pass@host/…`` or an anaconda.org
token, ``…/t/<token>/channel/…``). Such a URL must not travel inside a pack (its provenance) nor
appear in messages. py-rattler has no public redaction function and conda's ``remove_auth`` /
``split_anaconda_token`` are only there when conda is, so the two rules live here.
"""

from __future__ import annotations

import re
from typing import Final
from urllib.parse import urlsplit, urlunsplit

#: An anaconda.org-style token segment: ``/t/<token>/``.
TOKEN_SEGMENT: Final = re.compile(r"/t/[^/]+(?=/)")


def public_url(url: str) -> str:
    """``url`` without user, password and ``/t/<token>`` segment; other text is left as it is."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return url
    netloc = parts.netloc.rsplit("@", 1)[-1] if "@" in parts.netloc else parts.netloc
    path = TOKEN_SEGMENT.sub("", parts.path, count=1)
    if (netloc, path) == (parts.netloc, parts.path):
        return url
    return urlunsplit((parts.scheme, netloc, path, parts.query, parts.fragment))
