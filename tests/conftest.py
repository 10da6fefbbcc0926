"""Shared fixtures: a real channel of built packages, an HTTP server for it, and pixi projects.

See ``tests/support/README.md`` for the API.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from platform import machine as host_machine
from typing import TYPE_CHECKING, Final

import pytest

from tests.support.channel import index_channel, record_for, write_lock, write_project
from tests.support.packages import PLACEHOLDER, PackageSpec, binary_with_prefix, build_package
from tests.support.server import ChannelServer
from tests.support.slow_server import SlowServer
from tests.support.wheels import build_sdist, build_wheel, sha256_of

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Mapping, Sequence

    import rattler

#: Why conda-marked tests are skipped where conda cannot be imported (CI).
CONDA_SKIP_REASON: Final[str] = "conda is not importable"

#: Marker file the ``postlink`` package's post-link script writes into ``$PREFIX``.
POST_LINK_MARKER: Final[str] = ".postlink-ran"

#: Variable the ``activated`` package's activate.d script exports.
ACTIVATE_VARIABLE: Final[str] = "FIXTURE_ACTIVATED"


def conda_importable() -> bool:
    """True where ``import conda`` would work (without importing it: it is slow)."""
    if "conda" in sys.modules:
        return sys.modules["conda"] is not None
    try:
        return importlib.util.find_spec("conda") is not None
    except (ImportError, ValueError):
        return False


#: The private caches of this run (removed when it ends).
_PRIVATE_CACHES: list[Path] = []


def pytest_configure(config: pytest.Config) -> None:
    """Private, empty package caches for the whole run: conda's (``pack`` takes archives from
    them) and pip's (an installed environment's pip wheels are looked for there), so that no test
    depends on what the machine's own caches hold."""
    private = Path(tempfile.mkdtemp(prefix="conda-pixi-pack-tests-"))
    _PRIVATE_CACHES.append(private)
    os.environ["CONDA_PKGS_DIRS"] = str(private / "conda-pkgs")
    os.environ["PIP_CACHE_DIR"] = str(private / "pip-cache")


def pytest_runtest_setup(item: pytest.Item) -> None:
    """Skip ``@pytest.mark.conda`` tests, with a reason, where conda is not importable."""
    if item.get_closest_marker("conda") is not None and not conda_importable():
        pytest.skip(CONDA_SKIP_REASON)


@pytest.fixture(autouse=True)
def _own_conda_package_cache(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each test its own empty conda package cache: ``pack`` takes archives from it, so what an
    earlier test's conda unpack extracted there would otherwise change where packages come from."""
    monkeypatch.setenv("CONDA_PKGS_DIRS", str(tmp_path_factory.mktemp("conda-pkgs")))


@pytest.fixture
def conda_available() -> None:
    """Request this (or mark the test ``conda``) to skip where conda is not importable."""
    if not conda_importable():
        pytest.skip(CONDA_SKIP_REASON)


@pytest.fixture
def conda_env(tmp_path_factory: pytest.TempPathFactory, conda_available: None) -> dict[str, str]:
    """Environment for ``python -m conda`` subprocesses that touches nothing outside tmp.

    Own package cache, no user condarc, classic solver where conda-libmamba-solver is absent, and
    its own HOME: conda registers every environment it creates in ``~/.conda/environments.txt``.
    """
    base = tmp_path_factory.mktemp("conda-home")
    env = dict(os.environ)
    env.update(
        HOME=str(base / "home"),
        CONDA_PKGS_DIRS=str(base / "pkgs"),
        CONDARC=str(base / "condarc"),
        CONDA_ENVS_DIRS=str(base / "envs"),
        CONDA_OFFLINE="true",
        CONDA_ALWAYS_YES="true",
        CONDA_NOTIFY_OUTDATED_CONDA="false",
        CONDA_REPORT_ERRORS="false",
        # conda adds pip to python's depends by default; the fixture channels have no pip.
        CONDA_ADD_PIP_AS_PYTHON_DEPENDENCY="false",
    )
    (base / "condarc").write_text("")
    if importlib.util.find_spec("conda_libmamba_solver") is None:
        env["CONDA_SOLVER"] = "classic"
    return env


# -- the sample channel --------------------------------------------------------------------------


@dataclass
class Channel:
    """A channel folder of built packages (plus ``pypi/`` wheels and sdists)."""

    root: Path
    #: Package name -> archive path.
    packages: dict[str, Path] = field(default_factory=dict)
    #: Package name -> the spec it was built from.
    specs: dict[str, PackageSpec] = field(default_factory=dict)
    #: Wheel/sdist project name -> file path (below ``root/pypi``).
    wheels: dict[str, Path] = field(default_factory=dict)
    #: Seconds it took to build (the python channel is the slow one).
    build_seconds: float = 0.0

    def relpath(self, name: str) -> str:
        """``<subdir>/<file>`` of a package, or ``pypi/<file>`` of a wheel, below ``root``."""
        path = self.packages.get(name) or self.wheels[name]
        return path.relative_to(self.root).as_posix()

    def add(self, spec: PackageSpec) -> Path:
        """Build one more package into this channel (call :func:`index_channel` afterwards)."""
        path = build_package(spec, self.root)
        self.packages[spec.name] = path
        self.specs[spec.name] = spec
        return path


def sample_specs() -> list[PackageSpec]:
    """The realistic set behind ``sample_channel`` (see the README for what each one covers)."""
    return [
        PackageSpec("alpha", "1.0", "h0_0", depends=["beta >=1"], files={"share/alpha/README": "alpha\n"}),
        PackageSpec("beta", "1.2", "h0_0", fmt="tar.bz2", files={"share/beta/README": "beta\n"}),
        PackageSpec(
            "prefixed",
            "2.0",
            "h1_0",
            files={
                "bin/prefixed": f'#!/bin/sh\necho "{PLACEHOLDER}"\n',
                "etc/prefixed.conf": f"prefix={PLACEHOLDER}\ndata={PLACEHOLDER}/share/prefixed\n",
                "lib/libprefixed.so.2.0": binary_with_prefix("/lib"),
                "share/prefixed/data.bin": bytes(range(256)),
            },
            text_prefix_files=["bin/prefixed", "etc/prefixed.conf"],
            binary_prefix_files=["lib/libprefixed.so.2.0"],
            symlinks={"lib/libprefixed.so.2": "libprefixed.so.2.0", "lib/libprefixed.so": "libprefixed.so.2"},
            executables=["bin/prefixed"],
        ),
        PackageSpec(
            "postlink",
            "1.0",
            "0",
            files={"share/postlink/README": "post-link fixture\n"},
            post_link=f'echo "$PKG_NAME" > "$PREFIX/{POST_LINK_MARKER}"\n',
            pre_unlink=f'rm -f "$PREFIX/{POST_LINK_MARKER}"\n',
        ),
        PackageSpec(
            "activated",
            "1.0",
            "0",
            fmt="tar.bz2",
            files={"share/activated/README": "activation fixture\n"},
            activate_d=f'export {ACTIVATE_VARIABLE}="yes"\n',
        ),
        PackageSpec(
            "noarch-data", "0.5", "0", noarch="generic", files={"share/noarch-data/data.txt": "data\n"}
        ),
        PackageSpec(
            "pyapp",
            "0.3",
            "pyh0_0",
            noarch="python",
            depends=["python >=3.8"],
            files={
                "site-packages/pyapp/__init__.py": '__version__ = "0.3"\n',
                "site-packages/pyapp/cli.py": "def main():\n    print('pyapp says hi')\n",
                "site-packages/pyapp-0.3.dist-info/METADATA": (
                    "Metadata-Version: 2.1\nName: pyapp\nVersion: 0.3\n"
                ),
                "site-packages/pyapp-0.3.dist-info/INSTALLER": "conda\n",
            },
            entry_points=["pyapp = pyapp.cli:main"],
        ),
        PackageSpec(
            "constrained",
            "1.0",
            "0",
            constrains=["beta <2"],
            files={"share/constrained/README": "constrains beta <2\n"},
        ),
    ]


def _sample_wheels(root: Path) -> dict[str, Path]:
    pypi = root / "pypi"
    wheel = build_wheel(
        pypi,
        "fixture-wheel",
        "1.0",
        {
            "fixture_wheel/__init__.py": "VALUE = 42\n",
            "fixture_wheel/cli.py": "def main():\n    print('fixture-wheel says hi')\n",
        },
        {"fixture-wheel": "fixture_wheel.cli:main"},
    )
    sdist = build_sdist(pypi, "fixture-sdist", "1.0")
    return {"fixture-wheel": wheel, "fixture-sdist": sdist}


@pytest.fixture(scope="session")
def sample_channel(tmp_path_factory: pytest.TempPathFactory) -> Channel:
    """A real, indexed channel: see ``sample_specs`` and the README. Do not modify it."""
    started = time.monotonic()
    channel = Channel(tmp_path_factory.mktemp("sample-channel"))
    for spec in sample_specs():
        channel.add(spec)
    channel.wheels = _sample_wheels(channel.root)
    index_channel(channel.root)
    channel.build_seconds = time.monotonic() - started
    return channel


@pytest.fixture
def packages(sample_channel: Channel) -> Callable[..., list[Path]]:
    """``packages("alpha", "beta")``: those package files of the sample channel."""
    return lambda *names: [sample_channel.packages[n] for n in names]


@pytest.fixture(scope="session")
def python_channel(tmp_path_factory: pytest.TempPathFactory, sample_channel: Channel) -> Channel:
    """A channel with ``python`` built from this interpreter, ``pyapp`` (noarch: python, entry
    point ``pyapp``) and the ``fixture-wheel`` wheel. Slow to build once (see ``build_seconds``)."""
    from tests.support.python_pkg import build_python_package, python_spec

    if not (sys.platform.startswith("linux") and host_machine() == "x86_64"):
        pytest.skip("the python fixture package is built for linux-64 only")
    started = time.monotonic()
    channel = Channel(tmp_path_factory.mktemp("python-channel"))
    path = build_python_package(channel.root)
    channel.packages["python"] = path
    channel.specs["python"] = python_spec()
    pyapp = next(s for s in sample_specs() if s.name == "pyapp")
    channel.add(pyapp)
    channel.wheels = _sample_wheels(channel.root)
    index_channel(channel.root)
    channel.build_seconds = time.monotonic() - started
    return channel


# -- servers -------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def channel_server(sample_channel: Channel) -> Iterator[ChannelServer]:
    """The sample channel over HTTP. Shared: never change its behaviour (use ``make_server``)."""
    with ChannelServer(sample_channel.root) as server:
        yield server


@pytest.fixture
def make_server() -> Iterator[Callable[[Path], ChannelServer]]:
    """Factory: ``make_server(root)`` -> a fresh, started server, closed after the test."""
    servers: list[ChannelServer] = []

    def factory(root: Path) -> ChannelServer:
        server = ChannelServer(root).start()
        servers.append(server)
        return server

    yield factory
    for server in servers:
        server.close()


# -- projects ------------------------------------------------------------------------------------


@pytest.fixture
def make_project(
    tmp_path_factory: pytest.TempPathFactory, sample_channel: Channel, channel_server: ChannelServer
) -> Callable[..., Path]:
    """Factory writing ``pixi.toml`` + ``pixi.lock`` into a fresh tmp dir; returns that dir.

    See the README for the arguments.
    """

    def factory(
        packages: Sequence[str | Path] = ("alpha", "beta"),
        *,
        channel: Channel | None = None,
        server: ChannelServer | None = None,
        urls: str = "http",
        wheels: Sequence[object] = (),
        environment: str = "default",
        platform: str = "linux-64",
        extra: Mapping[str, Sequence[str | Path]] | None = None,
        directory: Path | None = None,
    ) -> Path:
        chan = channel or sample_channel
        srv = server or (channel_server if chan is sample_channel else None)
        if urls == "http" and srv is None:
            raise ValueError(
                "make_project(urls='http') needs server= for a channel other than sample_channel"
            )
        project = directory or tmp_path_factory.mktemp("project")
        base = _base_url(chan, srv, urls)
        relocate = None
        if urls == "relative":
            relocate = (base, Path(os.path.relpath(chan.root, project)).as_posix())

        def url_of(path: Path) -> str:
            try:
                rel = path.resolve().relative_to(chan.root.resolve()).as_posix()
            except ValueError:
                return path.resolve().as_uri()
            return f"{base}/{rel}"

        def records(items: Sequence[str | Path]) -> list[rattler.RepoDataRecord]:
            out = []
            for item in items:
                path = chan.packages[item] if isinstance(item, str) else Path(item)
                out.append(record_for(path, url_of(path), channel=base))
            return out

        locked_wheels: list[tuple[str, str, str, str | None]] = []
        for wheel in wheels:
            if isinstance(wheel, tuple):
                locked_wheels.append(wheel)
                continue
            path = chan.wheels[wheel] if isinstance(wheel, str) else Path(wheel)
            name, version = _dist_name_version(path)
            locked_wheels.append((name, version, url_of(path), sha256_of(path)))

        extra_records = {env: records(items) for env, items in (extra or {}).items()}
        write_lock(
            project / "pixi.lock",
            records(packages),
            channel=base,
            wheels=locked_wheels,
            environment=environment,
            platform=platform,
            extra_environments=extra_records,
            relocate=relocate,
        )
        write_project(
            project,
            channels=[base],
            platforms=[platform],
            environments=[environment, *extra_records],
        )
        return project

    return factory


def _base_url(channel: Channel, server: ChannelServer | None, urls: str) -> str:
    if urls == "http":
        assert server is not None
        return server.url
    if urls in ("file", "relative"):
        return channel.root.resolve().as_uri()
    raise ValueError(f"urls must be 'http', 'file' or 'relative', not {urls!r}")


def _dist_name_version(path: Path) -> tuple[str, str]:
    """Project name and version from a wheel or sdist file name."""
    name = path.name
    if name.endswith(".whl"):
        dist, version = name.split("-")[:2]
    else:
        dist, _, version = name.removesuffix(".tar.gz").rpartition("-")
    return dist.replace("_", "-"), version


@pytest.fixture
def slow_server() -> Iterator[Callable[..., SlowServer]]:
    """Factory of :class:`tests.support.slow_server.SlowServer` instances, closed afterwards."""
    servers: list[SlowServer] = []

    def factory(files: dict[str, bytes], **kwargs: float) -> SlowServer:
        servers.append(SlowServer(files, **kwargs))
        return servers[-1]

    yield factory
    for server in servers:
        server.close()


# -- leaving the test process ---------------------------------------------------------------------

_EXIT_STATUS: list[int] = []


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    _EXIT_STATUS.append(int(exitstatus))
    for private in _PRIVATE_CACHES:
        shutil.rmtree(private, ignore_errors=True)


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config: pytest.Config) -> None:
    """Leave without the interpreter's teardown once every result is reported, as ``cli.run``
    does: py-rattler's background threads can abort CPython while it finalizes ("PyGILState_Release
    … finalizing"), which would turn a green run into a crash after the summary."""
    if _EXIT_STATUS:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(_EXIT_STATUS[-1])
