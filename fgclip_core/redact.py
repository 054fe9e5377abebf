"""Masking credentials in URIs before they are logged, printed or stored.

``redact_uri("http://user:pw@host:5000/x")`` -> ``"http://***@host:5000/x"``; a URI without user
info comes back unchanged. ``redact_text`` does the same for every URL inside a longer text (an
exception message from an HTTP client often quotes the full URL). Secrets in query strings
(``?token=...``, ``?X-Amz-Signature=...``) are masked too. Use these for every URI that goes to a
log line, a summary file, a printed table, an MLflow param/tag or Dagster metadata.
"""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

MASK = "***"
# query keys whose values are secrets (lower case)
_SECRET_KEYS = ("token", "password", "passwd", "secret", "signature", "x-amz-signature", "x-amz-credential",
                "x-amz-security-token", "access_token", "api_key", "apikey", "key", "sig")
# scheme://userinfo@ anywhere in a text: up to the last '@' before the first '/' or whitespace (a password
# with an unescaped '@' is still masked whole)
_USERINFO = re.compile(r"(?P<scheme>\b[a-zA-Z][a-zA-Z0-9+.\-]*://)(?P<userinfo>[^/\s'\"]+)@")


def _mask_query(query: str) -> str:
    if not query:
        return query
    pairs = parse_qsl(query, keep_blank_values=True)
    if not any(k.lower() in _SECRET_KEYS for k, _ in pairs):
        return query
    return urlencode([(k, MASK if k.lower() in _SECRET_KEYS else v) for k, v in pairs], safe="*")


def redact_uri(uri: str | None) -> str | None:
    """``uri`` with its user info (``user:password@``) and secret query values replaced by ``***``."""
    if uri is None:
        return None
    text = str(uri)
    try:
        parts = urlsplit(text)
    except ValueError:
        return redact_text(text)
    if not parts.scheme or not parts.netloc:
        return text
    netloc = parts.netloc
    if "@" in netloc:
        netloc = f"{MASK}@{netloc.rsplit('@', 1)[1]}"
    return urlunsplit((parts.scheme, netloc, parts.path, _mask_query(parts.query), parts.fragment))


def redact_text(text: str) -> str:
    """``text`` with the user info of every ``scheme://user:pw@host`` inside it masked."""
    return _USERINFO.sub(lambda m: f"{m.group('scheme')}{MASK}@", str(text))


def strip_userinfo(uri: str) -> tuple[str, str | None, str | None]:
    """``(uri without user info, username, password)``; username/password are ``None`` when absent."""
    from urllib.parse import unquote

    parts = urlsplit(uri)
    if "@" not in parts.netloc:
        return uri, None, None
    userinfo, host = parts.netloc.rsplit("@", 1)
    user, _, password = userinfo.partition(":")
    bare = urlunsplit((parts.scheme, host, parts.path, parts.query, parts.fragment))
    return bare, unquote(user) or None, unquote(password) if password else None
