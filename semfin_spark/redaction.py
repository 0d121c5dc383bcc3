"""Secrets out of every line SemFin prints, logs or raises: :func:`redact`.

A Hub endpoint may carry a user and password (``https://user:pass@hub.internal``), a
token may sit in a URL's query or in a header quoted by an error. The CLI passes its
progress lines and error messages through :func:`redact`, installs
:class:`RedactingFilter` on its log handler, and errors that quote URLs redact
themselves, so none of these reaches a terminal, a scheduler's log or a table.
"""

from __future__ import annotations

import logging
import re

_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    # user:password@ (or a lone token@) in any URL
    (re.compile(r"(?i)\b([a-z][a-z0-9+.\-]*://)[^/\s@'\"]+@"), r"\1***@"),
    # Hugging Face tokens wherever they appear
    (re.compile(r"\bhf_[A-Za-z0-9]{8,}"), "hf_***"),
    # Authorization headers quoted in errors
    (re.compile(r"(?i)\b(bearer|basic|token)\s+[A-Za-z0-9._~+/=\-]{8,}"), r"\1 ***"),
    # credentials in query strings
    (re.compile(r"(?i)([?&](?:token|access_token|api_key|apikey|key|password|secret|sig|"
                r"signature|x-amz-signature|x-amz-credential)=)[^&\s'\"]+"), r"\1***"),
    # settings whose name says they hold one (as Spark's spark.redaction.regex does:
    # secret, password, token, access.key; not "max_tokens" or "tokenizer"), as in
    # --conf spark.hadoop.fs.s3a.secret.key=... or fs.azure.account.key.<account>=...
    (re.compile(r"(?i)(\b[\w.\-]*(?:secret|password|passwd|token(?![a-z])|access\.key|"
                r"account\.key)[\w.\-]*=)[^\s&'\"]+"), r"\1***"),
)


def redact(text: str) -> str:
    """``text`` with credentials replaced by ``***``.

    Examples:
        >>> redact("GET https://alice:s3cret@hub.internal/api/models failed")
        'GET https://***@hub.internal/api/models failed'
        >>> redact("token hf_abcdefghijklmnop, url http://h/x?token=abc&limit=3")
        'token hf_***, url http://h/x?token=***&limit=3'
        >>> redact("--conf spark.hadoop.fs.s3a.secret.key=wJalr/K7MDENG --conf spark.ui.port=0")
        '--conf spark.hadoop.fs.s3a.secret.key=*** --conf spark.ui.port=0'
    """
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


class RedactingFilter(logging.Filter):
    """A logging filter that redacts each record's formatted message."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        clean = redact(message)
        if clean != message:
            record.msg, record.args = clean, None
        return True
