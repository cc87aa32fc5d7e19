"""Credentials kept out of whatever is shown: URLs in logs, error messages and banners.

A libpq URL carries credentials in its user information (``user:password@``) and in
query parameters (``password=``, ``sslpassword=``, ``oauth_client_secret=``), whose
names libpq and asyncpg decode, so ``pass%77ord=`` counts; ``PassWord=`` is masked too,
being plainly meant as one. A password is often pasted unencoded, and then holds a
``/``, ``?``, ``#``, ``@`` or ``&`` that ends a URL's part early: the masking takes the
URL both as a parser reads it and with the user information running to the last ``@``,
and masks what either reading calls a credential, so a malformed URL shows less, never
more.
"""

from __future__ import annotations

import re
from urllib.parse import unquote, unquote_plus

MASK = "***"

_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")
# Matched on the decoded, lower-cased name. ``secret`` is libpq's oauth_client_secret;
# ``token`` is for the other URLs a log line may quote (a webhook's ``?token=``).
# ``passfile`` names a file, not a secret.
_CREDENTIAL_NAME = re.compile(r"pass(?!file$)|secret|token")
_AUTHORITY_END = re.compile(r"[/?#]")
# A URL inside free text (a log value, a traceback): up to the next whitespace.
_URL_IN_TEXT = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://\S+")

Span = tuple[int, int]


def _password(url: str, start: int, at: int) -> list[Span]:
    """The password of user information running from ``start`` to the ``@`` at ``at``."""
    colon = url.find(":", start, at) if at >= 0 else -1
    return [(colon + 1, at)] if 0 <= colon < at - 1 else []


def _query(url: str, start: int, end: int) -> list[Span]:
    """Credential values in the query ``url[start:end]``, and fields that are not
    ``name=value`` at all (the rest of a value that held an unencoded ``&``)."""
    spans: list[Span] = []
    position = start
    for field in url[start:end].split("&"):
        name, equals, value = field.partition("=")
        if not equals and field:
            spans.append((position, position + len(field)))
        elif value and _CREDENTIAL_NAME.search(unquote_plus(name).strip().lower()):
            spans.append((position + len(name) + 1, position + len(field)))
        position += len(field) + 1
    return spans


def _secret_spans(url: str) -> list[Span]:
    scheme = _SCHEME.match(url)
    if scheme is None:
        return [(0, len(url))] if url else []
    start = scheme.end()
    # As urlsplit and asyncpg read it: the authority ends at the first / ? or #.
    authority_end = end.start() if (end := _AUTHORITY_END.search(url, start)) else len(url)
    fragment = url.find("#", start)
    query_end = fragment if fragment >= 0 else len(url)
    question = url.find("?", start, query_end)
    spans = _password(url, start, url.rfind("@", start, authority_end))
    if question >= 0:
        spans += _query(url, question + 1, query_end)
    # With the user information running to the last @, and no fragment.
    last_at = url.rfind("@", start)
    spans += _password(url, start, last_at)
    question = url.find("?", max(start, last_at + 1))
    if question >= 0:
        spans += _query(url, question + 1, len(url))
    return spans


def _merged(spans: list[Span]) -> list[Span]:
    merged: list[Span] = []
    for begin, end in sorted(spans):
        if merged and begin <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(end, merged[-1][1]))
        else:
            merged.append((begin, end))
    return merged


def redact_url(url: str) -> str:
    """The URL with every credential it carries replaced by ``***``."""
    shown, position = [], 0
    for begin, end in _merged(_secret_spans(url)):
        shown += [url[position:begin], MASK]
        position = end
    return "".join([*shown, url[position:]])


def redact_text(text: str, url: str) -> str:
    """``text`` (an error message, say) without the credentials ``url`` carries,
    whether it quotes the URL, a credential, or a piece of one, raw or decoded."""
    text = text.replace(url, redact_url(url))
    secrets = {url[begin:end] for begin, end in _secret_spans(url)}
    secrets |= {decode(secret) for secret in secrets for decode in (unquote, unquote_plus)}
    for secret in sorted(secrets - {""}, key=len, reverse=True):
        text = text.replace(secret, MASK)
    return text


def redact_urls_in(text: str) -> str:
    """``text`` with every URL in it passed through ``redact_url``."""
    if "://" not in text:
        return text
    return _URL_IN_TEXT.sub(lambda match: redact_url(match.group()), text)
