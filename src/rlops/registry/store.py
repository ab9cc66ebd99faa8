"""The content-addressed artifact store, and where artifacts may come from.

A registered artifact is copied to ``<store>/sha256/<hex>/`` (``hex`` is its
content hash, the version id), through a temporary directory and a rename, so
a half-copied artifact is never visible. Loading goes through
:func:`rlops.artifacts.load_policy`, which recomputes the hash and refuses a
tampered copy; :func:`verified_path` also checks that the copy is the
version the registry names.

Sources are refused unless they resolve (links followed) inside one of the
allowed roots, and every file inside them must be a regular file that is not
a symbolic link: ``../``, ``file:///etc/...`` and links that escape are all
caught by resolving before comparing. Only local paths and ``file://`` URLs
are accepted.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import unquote, urlparse

from rlops.artifacts import load_policy
from rlops.artifacts.policy import MANIFEST_FILE, MODEL_FILE
from rlops.core.errors import ArtifactError, RegistryError

ARTIFACT_FILES = (MODEL_FILE, MANIFEST_FILE)


def resolve_source(source: str, allowed_roots: Sequence[Path]) -> Path:
    """The artifact directory named by ``source`` (a path or ``file://`` URL), checked.

    Raises:
        RegistryError: another URL scheme, a path outside every allowed root
            (after resolving ``..`` and links), a missing artifact, or a link
            or non-regular file inside it.
    """
    if "://" in source:
        url = urlparse(source)
        if url.scheme != "file" or url.netloc not in ("", "localhost"):
            raise RegistryError(
                f"source: {source!r} is not a local path; only paths and file:// URLs are allowed"
            )
        source = unquote(url.path)
    raw = Path(source).expanduser()
    try:
        path = raw.resolve(strict=True)
    except (OSError, RuntimeError):
        raise RegistryError(f"source: {source} does not exist") from None
    roots = [Path(r).resolve() for r in allowed_roots]

    def check_root(p: Path) -> None:
        if not any(p == root or p.is_relative_to(root) for root in roots):
            allowed = ", ".join(str(r) for r in roots) or "(none configured)"
            raise RegistryError(
                f"source: {source} resolves to {p}, outside the allowed roots ({allowed}); "
                "set registry.allowed_roots (or $RLOPS_REGISTRY_ALLOWED_ROOTS) to allow it"
            )

    check_root(path)
    if (path / "artifact").is_dir() and not (path / MANIFEST_FILE).exists():
        # A run directory: take its artifact, checked like the source itself (a
        # linked artifact/ must not lead out of the roots).
        if (path / "artifact").is_symlink():
            raise RegistryError(f"source: {path / 'artifact'} is a symbolic link; refused")
        path = (path / "artifact").resolve(strict=True)
        check_root(path)
    for name in ARTIFACT_FILES:
        f = path / name
        if f.is_symlink():
            raise RegistryError(f"source: {f} is a symbolic link; register a plain copy")
        if not f.is_file():
            raise RegistryError(
                f"source: {path} is not a policy artifact (no {name}); "
                "give an artifact directory or a run directory"
            )
    return path


def store_artifact(source: Path, content_hash: str, store: Path) -> tuple[Path, bool]:
    """Copy the artifact at ``source`` into the store.

    Idempotent: an existing stored copy is verified and reused. Files are
    opened without following links (``O_NOFOLLOW``, relative to the source
    directory opened the same way), so a link swapped in after
    :func:`resolve_source` checked the path is refused, not followed.

    Returns:
        ``(stored directory, whether this call created it)``.

    Raises:
        RegistryError: a link in the way, or a copy that does not hash to ``content_hash``.
    """
    digest = content_hash.removeprefix("sha256:")
    target = store / "sha256" / digest
    if target.is_dir():
        verified_path(target, content_hash)
        return target, False
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{digest[:12]}.", dir=target.parent))
    try:
        _copy_nofollow(source, tmp)
        verified_path(tmp, content_hash)
        try:
            os.rename(tmp, target)
        except OSError:
            if not target.is_dir():  # not a concurrent registration of the same bytes
                raise
            shutil.rmtree(tmp, ignore_errors=True)
            return target, False
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target, True


def _copy_nofollow(source: Path, tmp: Path) -> None:
    nofollow = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0)
    try:
        dir_fd = os.open(source, nofollow | getattr(os, "O_DIRECTORY", 0))
    except OSError as exc:
        raise RegistryError(
            f"source: cannot open {source} without following links: {exc}"
        ) from None
    try:
        for name in ARTIFACT_FILES:
            try:
                fd = os.open(name, nofollow, dir_fd=dir_fd)
            except OSError as exc:
                raise RegistryError(f"source: {source / name}: {exc.strerror}; refused") from None
            with os.fdopen(fd, "rb") as src, open(tmp / name, "wb") as dst:
                shutil.copyfileobj(src, dst)
                dst.flush()
                os.fsync(dst.fileno())
    finally:
        os.close(dir_fd)


def verified_path(path: Path, content_hash: str) -> Path:
    """``path`` after checking it holds the artifact ``content_hash`` (recomputed).

    Raises:
        RegistryError: the files are missing, tampered with, or another version.
    """
    try:
        policy = load_policy(path)
    except ArtifactError as exc:
        raise RegistryError(f"store: {path}: {exc}") from None
    if policy.version != content_hash:
        raise RegistryError(
            f"store: {path} holds {policy.version}, not {content_hash}: hash mismatch, refused"
        )
    return path
