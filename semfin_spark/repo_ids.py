"""What can be a Hub repo id: one rule for the ingest, the crawler and every table key.

Pure Python, no Spark: the crawler runs on the driver and the ingest on the executors.
"""

from __future__ import annotations

import re

_REPO_ID = re.compile(r"^(?:[A-Za-z0-9_.\-]+/)?[A-Za-z0-9_.\-]+$")
# Far beyond any real id (legacy ids of 257 characters exist); only absurd lengths go.
_MAX_REPO_ID = 1024


def is_valid_repo_id(repo_id: str) -> bool:
    """True for a Hub model id: ``owner/name`` or a legacy ``name``.

    Looser than ``huggingface_hub.utils.validate_repo_id`` on purpose: the Hub still
    serves older repos whose names break today's creation rules (names over 96
    characters, a leading ``_``, a ``.git`` suffix), and those are real models. What is
    refused cannot be a repo: empty parts, ``.``/``..`` parts, more than one ``/``,
    characters outside ``A-Za-z0-9_.-``, more than 1,024 characters (real legacy ids
    reach 257).

    Examples:
        >>> is_valid_repo_id("meta-llama/Llama-3.1-8B"), is_valid_repo_id("gpt2")
        (True, True)
        >>> is_valid_repo_id("a/b/c"), is_valid_repo_id("x y/z"), is_valid_repo_id("../z")
        (False, False, False)
        >>> is_valid_repo_id("o/" + "n" * 255), is_valid_repo_id("o/" + "n" * 2000)
        (True, False)
    """
    return (len(repo_id) <= _MAX_REPO_ID and bool(_REPO_ID.match(repo_id))
            and not any(part in (".", "..") for part in repo_id.split("/")))
