"""What configures ``pack``'s downloads: ``--auth-file``, ``--config`` and its timeout keys.

``--config`` is a pixi/rattler ``config.toml`` read by rattler (mirrors, proxies, TLS, S3,
``concurrency.downloads``). pixi has no network timeout keys, and rattler ignores keys it does not
know, so the timeouts and retries use conda's names (:data:`READ_TIMEOUT_KEY`...), in pixi's kebab
case or conda's snake case, read from the same file with ``tomllib``.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from conda_pixi_pack.errors import PackError, first_line

if TYPE_CHECKING:
    from rattler import Config

#: Retries of 5xx answers and failed connections inside one attempt (rattler's RetryMiddleware,
#: and the direct transport alike).
CLIENT_RETRIES: Final = 3
#: Our attempts per file for what the clients do not retry: cut bodies, stalls, local read errors
#: (1 + ``remote-max-retries``, conda's default of 3 retries).
ATTEMPTS: Final = 4
#: Seconds an attempt waits for any byte before it is abandoned (``remote-read-timeout-secs``):
#: four attempts give up on a server that never answers in about two minutes.
READ_TIMEOUT: Final = 30.0
#: Seconds to open a connection, TCP and TLS (``remote-connect-timeout-secs``; conda's is 9.15).
CONNECT_TIMEOUT: Final = 10.0
#: The ``--config`` keys for the three (conda's names, in pixi's kebab case; snake case works too).
READ_TIMEOUT_KEY: Final = "remote-read-timeout-secs"
CONNECT_TIMEOUT_KEY: Final = "remote-connect-timeout-secs"
MAX_RETRIES_KEY: Final = "remote-max-retries"
#: Environment variable that rattler's AuthenticationMiddleware reads.
AUTH_FILE_ENV: Final = "RATTLER_AUTH_FILE"


@dataclass(frozen=True)
class NetworkSettings:
    """What configures the downloads: ``--auth-file`` and ``--config`` (pixi/rattler TOML).

    The timeouts and attempts left at None come from ``--config`` (:func:`load_limits`), else
    from the defaults above; tests set them directly.
    """

    auth_file: Path | None = None
    config_file: Path | None = None
    #: An attempt that receives no byte for this long is abandoned (and retried).
    stall_timeout: float | None = None
    #: Seconds to open one connection (TCP, then TLS).
    connect_timeout: float | None = None
    #: Our attempts per file for transient failures (the clients' own retries come on top).
    attempts: int | None = None
    #: Retries of 5xx answers and failed connections within one attempt.
    retries: int = CLIENT_RETRIES


@dataclass(frozen=True)
class Limits:
    """The timeouts and attempts in force: :class:`NetworkSettings`, ``--config``, defaults."""

    connect: float = CONNECT_TIMEOUT
    read: float = READ_TIMEOUT
    attempts: int = ATTEMPTS


def load_config(network: NetworkSettings) -> Config:
    """The rattler config from ``--config`` (or defaults), with ``--auth-file`` as override file."""
    from rattler import Config

    config = Config()
    if network.config_file is not None:
        path = Path(network.config_file)
        if not path.is_file():
            raise PackError(f"config file {path} does not exist", "give a pixi/rattler config.toml")
        try:
            config = Config.load_from_files([path])
        except Exception as exc:  # rattler.exceptions.ConfigError
            raise PackError(f"cannot read config file {path}: {first_line(exc)}") from exc
    given = auth_file(network, config)
    if network.auth_file is not None:
        config.set("authentication-override-file", json.dumps(str(Path(network.auth_file).resolve())))
    # rattler silently ignores a missing credentials file; a typo would surface as a 401 later.
    if given is not None and not given.is_file():
        raise PackError(
            f"authentication file {given} does not exist",
            f"check `--auth-file`, {AUTH_FILE_ENV} or authentication-override-file",
        )
    return config


def auth_file(network: NetworkSettings, config: Config) -> Path | None:
    """The credentials file given by ``--auth-file``, else ``RATTLER_AUTH_FILE``, else the config."""
    if network.auth_file is not None:
        return Path(network.auth_file)
    given = os.environ.get(AUTH_FILE_ENV) or config.authentication_override_file
    return Path(given) if given else None


def load_limits(network: NetworkSettings) -> Limits:
    """Timeouts and attempts: set in ``network``, else in the ``--config`` file under conda's
    names (``remote-read-timeout-secs``, ``remote-connect-timeout-secs``, ``remote-max-retries``;
    pixi has no such keys, and rattler ignores keys it does not know), else the defaults."""
    keys = _own_keys(network.config_file) if network.config_file is not None else {}
    read = network.stall_timeout or keys.get(READ_TIMEOUT_KEY) or READ_TIMEOUT
    connect = network.connect_timeout or keys.get(CONNECT_TIMEOUT_KEY) or CONNECT_TIMEOUT
    retries = keys.get(MAX_RETRIES_KEY)
    attempts = network.attempts or (int(retries) + 1 if retries is not None else ATTEMPTS)
    return Limits(connect=float(connect), read=float(read), attempts=attempts)


def _own_keys(path: Path) -> dict[str, float]:
    """Our keys of a config file rattler has read already (so it is valid TOML), checked."""
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - Python 3.10
        import tomli as tomllib

    try:
        document: dict[str, Any] = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise PackError(f"cannot read config file {path}: {first_line(exc)}") from exc
    found: dict[str, float] = {}
    for key in (READ_TIMEOUT_KEY, CONNECT_TIMEOUT_KEY, MAX_RETRIES_KEY):
        value = document.get(key, document.get(key.replace("-", "_")))
        if value is None:
            continue
        whole = key == MAX_RETRIES_KEY
        if (
            isinstance(value, bool)
            or not isinstance(value, (int, float))
            or value < 0
            or (not whole and value == 0)
            or (whole and not isinstance(value, int))
        ):
            kind = "a whole number, 0 or more" if whole else "a number of seconds, more than 0"
            raise PackError(
                f"config file {path}: {key} must be {kind}, not {value!r}", f"fix {key} in {path}"
            )
        found[key] = value
    return found
