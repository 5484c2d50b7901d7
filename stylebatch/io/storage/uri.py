"""Building URIs: joining parts onto a base in its own form, output keys that cannot escape their
base (``output_uri`` refuses traversal, absolute parts, control characters, URL-encoded separators),
and comparing locations (``is_within``, ``absolute``)."""

from __future__ import annotations

import os
import urllib.parse
from typing import Any

from stylebatch.io.storage.base import SCHEME_RE, UnsafePathError
from stylebatch.io.storage.dispatch import backend_for, parse_uri


def join(base_uri: str, *parts: str) -> str:
    """Join path parts onto a URI with "/" and keep its form (bare path, file://, s3://).

    Leading/trailing slashes of parts are dropped and empty parts skipped, so a part can never
    replace the base the way ``os.path.join`` does with an absolute part. For untrusted parts use
    :func:`output_uri`, which also rejects traversal.
    """
    base = os.fspath(base_uri)
    parse_uri(base)  # validate scheme early
    clean = [str(p).strip("/") for p in parts]
    clean = [p for p in clean if p]
    if not clean:
        return base
    if base.endswith("/"):
        return base + "/".join(clean)
    return base + "/" + "/".join(clean)


_MAX_DECODE_ROUNDS = 10
_MAX_SEGMENT_BYTES = 255  # NAME_MAX on common local filesystems


def _fully_unquote(text: str) -> str:
    for _ in range(_MAX_DECODE_ROUNDS):
        decoded = urllib.parse.unquote(text)
        if decoded == text:
            return text
        text = decoded
    return text


def _check_output_part(part: Any) -> str | None:
    """Return why ``part`` is unsafe, or None when it is fine."""
    if not isinstance(part, str):
        return f"must be a string, got {type(part).__name__}"
    if part == "":
        return "is empty"
    if part.startswith("/"):
        return "is an absolute path"
    if "\\" in part:
        return "contains a backslash"
    if any(ord(c) < 32 or ord(c) == 127 for c in part):
        return "contains a NUL or control character"
    decoded = _fully_unquote(part)
    if decoded != part:
        # Percent-encoded separators or dots are traversal attempts once any later layer decodes.
        if decoded.count("/") != part.count("/") or "\\" in decoded:
            return "contains a URL-encoded path separator (%2f or %5c)"
        if any(ord(c) < 32 or ord(c) == 127 for c in decoded):
            return "contains a URL-encoded control character"
    for text, note in ((part, ""), (decoded, " (URL-encoded)")):
        for seg in text.split("/"):
            if seg == "..":
                return "contains a '..' segment" + note
            if seg == ".":
                return "contains a '.' segment"
            if seg == "":
                return "contains an empty path segment (// or a trailing /)"
            if len(seg.encode("utf-8", "surrogatepass")) > _MAX_SEGMENT_BYTES:
                return f"has a path segment longer than {_MAX_SEGMENT_BYTES} bytes"
    return None


def output_uri(base_uri: str, *parts: str) -> str:
    """Join ``parts`` under ``base_uri`` and guarantee the result stays under it.

    Each part may contain "/" between non-empty segments; a part that is empty, absolute, has
    ".." or "." segments, a backslash, a NUL/control character, or URL-encoded traversal
    (%2e%2e, %2f, %5c in any case, decoded repeatedly) raises UnsafePathError naming it.
    """
    base = os.fspath(base_uri)
    parse_uri(base)
    if not parts:
        raise UnsafePathError(f"output_uri needs at least one path part under {base!r}", uri=base)
    for part in parts:
        why = _check_output_part(part)
        if why is not None:
            raise UnsafePathError(f"unsafe output path part {part!r} under {base!r}: {why}", uri=base)
    result = join(base, *parts)
    # Belt and braces: the checks above imply this, but the guarantee is the point of the function.
    prefix = base if base.endswith("/") else base + "/"
    if not result.startswith(prefix):  # pragma: no cover - unreachable if the checks are right
        raise UnsafePathError(f"output path {result!r} escapes {base!r}", uri=base)
    return result


def is_relative(ref: str) -> bool:
    """True for a bare local path that is not absolute: one to resolve against a base (with
    :func:`join`); False for URIs and absolute paths."""
    return not SCHEME_RE.match(ref) and not os.path.isabs(ref)


def is_within(child_uri: str, parent_uri: str) -> bool:
    """True when ``child_uri`` is ``parent_uri`` or lies under it (same scheme and bucket; local
    paths compared absolute)."""
    c_backend, c, _ = backend_for(child_uri)
    p_backend, p, _ = backend_for(parent_uri)
    c, p = c_backend.canonical(c), p_backend.canonical(p)
    if (c.scheme, c.bucket) != (p.scheme, p.bucket):
        return False
    c_path, p_path = c.key_or_path.rstrip("/"), p.key_or_path.rstrip("/")
    return p_path == "" or c_path == p_path or c_path.startswith(p_path + "/")


def absolute(uri: str) -> str:
    """``uri`` in a form that means the same from any working directory (a relative local path
    made absolute; other URIs unchanged)."""
    backend, loc, uri = backend_for(uri)
    return backend.absolute(uri, loc)

