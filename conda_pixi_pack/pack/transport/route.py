"""Which transport fetches a URL: the direct one where it does all that rattler's client would.

The direct transport (``direct.py``) sends a plain GET to the URL, after a single mirror. That
is what rattler's client does too, unless one of its middlewares or settings has a say; such a
URL goes to rattler's client instead:

- a scheme other than ``http``/``https`` (``s3://``, ``gcs://``, ``oci://``, ``file://`` aside);
- a ``[mirrors]`` entry with several mirrors (rattler fails over between them) or one that is not
  ``http(s)``;
- credentials that may apply: the host (or a ``*.`` wildcard over it) in a credentials file rattler
  reads (``--auth-file``, ``RATTLER_AUTH_FILE``, ``authentication-override-file``,
  ``~/.rattler/credentials.json``) or in netrc, or ``user:password@`` in the URL. Credentials kept
  only in the keyring cannot be seen from here: a 401 or 403 sends that host to rattler (see
  ``download.py``), which then sends them;
- a proxy (``[proxy-config]`` or the ``*_proxy`` environment variables) that the host does not
  bypass;
- ``tls-root-certs = "webpki"`` (rattler's bundled roots), or HTTPS while this Python's OpenSSL has
  no trust store of its own (e.g. a python.org build on macOS without its certificates installed);
- characters ``http.client`` refuses in a request line.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Final
from urllib.parse import urlsplit

from conda_pixi_pack.errors import PackError, first_line

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

    from rattler import Config

#: Schemes the direct transport speaks.
DIRECT_SCHEMES: Final = frozenset({"http", "https"})
#: Environment variables naming proxies, by the scheme they serve (reqwest reads the same).
PROXY_ENV: Final = {
    "http": ("http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"),
    "https": ("https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"),
}
#: rattler's own credentials file, read whatever else is configured.
DEFAULT_CREDENTIALS: Final = Path("~/.rattler/credentials.json")


@dataclass(frozen=True)
class Router:
    """Decides, per URL, between the direct transport (a URL) and rattler's client (None)."""

    #: ``[mirrors]``: channel prefix -> mirror prefixes, all with a trailing slash, longest first.
    mirrors: tuple[tuple[str, tuple[str, ...]], ...] = ()
    #: Host names and ``*.`` wildcards that have credentials somewhere rattler looks.
    credentials: frozenset[str] = frozenset()
    #: ``[proxy-config]``: proxy URL by scheme, and the hosts that bypass it.
    proxies: tuple[tuple[str, str], ...] = ()
    no_proxy: tuple[str, ...] = ()
    #: Whether HTTPS can be verified here as rattler would (system trust store, or no check at all).
    https: bool = True

    @classmethod
    def from_config(cls, config: Config, auth_files: Iterable[Path]) -> Router:
        """The router for a loaded rattler ``config`` and the credentials files it reads."""
        mirrors = sorted(
            (
                (_slash(prefix), tuple(_slash(m) for m in targets))
                for prefix, targets in config.mirrors.items()
            ),
            key=lambda item: -len(urlsplit(item[0]).path),
        )
        proxies = tuple(
            (scheme, url)
            for scheme, url in (("https", config.proxy_https), ("http", config.proxy_http))
            if url
        )
        webpki = str(config.tls_root_certs or "") == "webpki"
        return cls(
            mirrors=tuple(mirrors),
            credentials=frozenset(_credential_hosts(auth_files)),
            proxies=proxies,
            no_proxy=tuple(config.proxy_non_proxy_hosts or ()),
            https=bool(config.tls_no_verify) or (not webpki and has_trust_store()),
        )

    def direct_url(self, url: str) -> str | None:
        """The URL the direct transport fetches for ``url``, or None when rattler's client must."""
        target = self._mirrored(url)
        if target is None:
            return None
        parts = urlsplit(target)
        scheme, host = parts.scheme.lower(), (parts.hostname or "").lower()
        if scheme not in DIRECT_SCHEMES or not host or parts.username or parts.password:
            return None
        if scheme == "https" and not self.https:
            return None
        if not target.isascii() or any(ch in target for ch in " \t\r\n\x00"):
            return None
        if self._has_credentials(host) or self._proxied(scheme, host):
            return None
        return target

    def _mirrored(self, url: str) -> str | None:
        """``url`` with its ``[mirrors]`` prefix replaced (rattler's rule: the longest channel
        path first); None when the mirrors need rattler (several of them, or not HTTP)."""
        for prefix, targets in self.mirrors:
            if url.startswith(prefix):
                if len(targets) != 1 or urlsplit(targets[0]).scheme.lower() not in DIRECT_SCHEMES:
                    return None
                return targets[0] + url[len(prefix) :].lstrip("/")
        return url

    def _has_credentials(self, host: str) -> bool:
        if host in self.credentials or "default" in self.credentials:
            return True
        labels = host.split(".")
        return any("*." + ".".join(labels[i:]) in self.credentials for i in range(len(labels)))

    def _proxied(self, scheme: str, host: str) -> bool:
        configured = [url for kind, url in self.proxies if kind == scheme]
        if configured and not any(_host_matches(host, pattern) for pattern in self.no_proxy):
            return True
        if not any(os.environ.get(name) for name in PROXY_ENV[scheme]):
            return False
        from urllib.request import proxy_bypass_environment

        return not proxy_bypass_environment(host)


def has_trust_store() -> bool:
    """Whether this Python's OpenSSL finds CA certificates (``SSL_CERT_FILE``/``SSL_CERT_DIR``
    included): without them it would refuse every server that rattler's client trusts."""
    if sys.platform == "win32":  # the system store, loaded by ssl.create_default_context
        return True
    import ssl

    paths = ssl.get_default_verify_paths()
    if paths.cafile:
        return True
    if paths.capath:
        try:
            with os.scandir(paths.capath) as entries:
                return any(True for _ in entries)
        except OSError:
            return False
    return False


def _slash(url: str) -> str:
    return url if url.endswith("/") else url + "/"


def _host_matches(host: str, pattern: str) -> bool:
    """``no_proxy``-style match: the host itself, or a subdomain of ``.example.com``/``example.com``."""
    pattern = pattern.strip().lower().lstrip("*")
    if not pattern:
        return False
    if pattern == host or pattern.lstrip(".") == host:
        return True
    return host.endswith(pattern if pattern.startswith(".") else "." + pattern)


def _credential_hosts(auth_files: Iterable[Path]) -> set[str]:
    """Every host key of the credentials files (a missing one holds none) and of netrc."""
    hosts: set[str] = set()
    for path in auth_files:
        path = Path(path).expanduser()
        if not path.is_file():
            continue
        try:
            document = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise PackError(
                f"cannot read credentials from {path}: {first_line(exc)}",
                "fix the file given with `--auth-file` or RATTLER_AUTH_FILE (JSON: host -> credentials)",
            ) from exc
        if isinstance(document, dict):
            hosts |= {_key_host(key) for key in document}
    return hosts | _netrc_hosts(os.environ)


def _key_host(key: str) -> str:
    """The host of a credentials key (``host``, ``host/path``, ``*.domain`` or a URL)."""
    key = key.strip().lower()
    if "://" in key:
        key = key.split("://", 1)[1]
    return key.split("/", 1)[0].rsplit("@", 1)[-1].split(":", 1)[0]


def _netrc_hosts(environ: Mapping[str, str]) -> set[str]:
    """Hosts of the netrc file rattler reads (``NETRC``, else ``~/.netrc``); ``default`` stands
    for every host. An unreadable file is ignored, as rattler ignores it (with a warning)."""
    path = Path(environ.get("NETRC") or "~/.netrc").expanduser()
    if not path.is_file():
        return set()
    import netrc

    try:
        return {host.lower() for host in netrc.netrc(str(path)).hosts}
    except (OSError, netrc.NetrcParseError):
        return set()
