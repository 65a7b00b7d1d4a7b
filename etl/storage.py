"""Whole-file reads and writes on fsspec URLs (``file://``, plain paths or ``s3://``)."""

from __future__ import annotations

import os
import posixpath

import fsspec


def is_local(fs: fsspec.AbstractFileSystem) -> bool:
    protocols = fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,)
    return "file" in protocols or "local" in protocols


def write_bytes(url: str, data: bytes) -> None:
    """Write ``data`` to ``url`` so that readers never see a partial file.

    A local file is written beside its target and renamed over it. Object stores such
    as S3 publish a PUT atomically on their own.
    """
    fs, path = fsspec.core.url_to_fs(url)
    fs.makedirs(posixpath.dirname(path), exist_ok=True)
    if is_local(fs):
        tmp = f"{path}.tmp-{os.getpid()}"
        with open(tmp, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
        return
    with fs.open(path, "wb") as handle:
        handle.write(data)


def read_bytes(url: str) -> bytes:
    fs, path = fsspec.core.url_to_fs(url)
    with fs.open(path, "rb") as handle:
        return handle.read()


def exists(url: str) -> bool:
    fs, path = fsspec.core.url_to_fs(url)
    return fs.exists(path)


def join(url: str, *parts: str) -> str:
    """Join ``parts`` under ``url`` with ``/``."""
    return "/".join([url.rstrip("/"), *[part.strip("/") for part in parts if part]])


def remove_tree(url: str) -> None:
    """Delete the folder or object prefix at ``url`` when it exists."""
    fs, path = fsspec.core.url_to_fs(url)
    if fs.exists(path):
        fs.rm(path, recursive=True)
