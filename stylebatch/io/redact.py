"""Removing credentials from text before it is logged, raised or written (one definition, used by
storage's errors and by every module that echoes a URI or an error message)."""

from __future__ import annotations

import os
import re

__all__ = ["redact"]

# AWS key-id prefixes (long-term AKIA, temporary ASIA, and the other documented unique-id
# prefixes) followed by 16 upper-case base32 characters.
# The key may follow a percent-escape ("%3DAKIA..." in a URL-encoded query), where \b sees no boundary.
_AWS_KEY_ID_RE = re.compile(
    r"(?:(?<![A-Za-z0-9])|(?<=%[0-9A-Fa-f]{2}))"
    r"(?:AKIA|ASIA|AGPA|AIDA|AROA|AIPA|ANPA|ANVA|APKA|ABIA|ACCA)[A-Z0-9]{16}(?![A-Za-z0-9])"
)
# "AKIA...:secret@host" without a scheme (e.g. echoed back as an invalid bucket name): once the key id
# is "***", the text up to "@" is the secret.
_REDACTED_USERINFO_RE = re.compile(r"\*\*\*:[^/\s@?#'\"]*@")
# scheme://user:password@host -> scheme://***@host
_USERINFO_RE = re.compile(r"([A-Za-z][A-Za-z0-9+.\-]*://)[^/\s@:?#]+:[^/\s@?#]*@")
# Query-string / header style credentials: name=value.
_SECRET_PARAM_NAMES = (
    "X-Amz-Signature",
    "X-Amz-Credential",
    "X-Amz-Security-Token",
    "X-Goog-Signature",
    "X-Goog-Credential",
    "AWSAccessKeyId",
    "Signature",
    "Credential",
    "sig",
    "signature",
    "token",
    "access_token",
    "id_token",
    "refresh_token",
    "security_token",
    "session_token",
    "password",
    "passwd",
    "pwd",
    "secret",
    "client_secret",
    "api_key",
    "apikey",
    "key",
)
# Also in URL-encoded form (botocore echoes request URLs with ?, & and = as %3F, %26, %3D).
_SECRET_PARAM_RE = re.compile(
    r"(?i)((?:^|[?&;,\s]|%3F|%26|%3B)(?:" + "|".join(re.escape(n) for n in _SECRET_PARAM_NAMES)
    + r")(?:=|%3D))(?:(?!%26|%3B)[^&;,\s#'\"<>])+"
)
_SECRET_ENV_VARS = ("AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN")
# Real secrets are 40+ characters; dummy ones like "test" (common in local S3 setups) would
# otherwise turn every "test" in a path into "***".
_MIN_ENV_SECRET_LEN = 8


def redact(text: str) -> str:
    """Return ``text`` with credentials replaced by ``***``.

    Removes AWS access key ids (AKIA.../ASIA...), the values of AWS_SECRET_ACCESS_KEY /
    AWS_SESSION_TOKEN when set (8+ characters), ``user:password@`` in URIs and
    credential-bearing parameters (X-Amz-Signature, X-Amz-Credential, X-Amz-Security-Token,
    token=, sig=, Signature=, password=, ...).
    """
    if not isinstance(text, str):
        text = str(text)
    for var in _SECRET_ENV_VARS:
        value = os.environ.get(var)
        if value and len(value) >= _MIN_ENV_SECRET_LEN and value in text:
            text = text.replace(value, "***")
    text = _AWS_KEY_ID_RE.sub("***", text)
    text = _REDACTED_USERINFO_RE.sub("***@", text)
    text = _USERINFO_RE.sub(r"\1***@", text)
    text = _SECRET_PARAM_RE.sub(r"\1***", text)
    return text
