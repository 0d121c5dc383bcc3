"""Licences: one id per licence spelling, its family, and parent/child compatibility rules.

Three parts, used in this order:

1. **Normalisation** (:func:`normalize_license`). Any spelling a model author uses
   (``"Apache License 2.0"``, ``"CC BY-NC 4.0"``, ``"gplv3"``, ``"Llama-3.1"``, a
   ``license:mit`` tag) becomes one licence id, spelled as the Hub spells ids: the
   lower-case SPDX id where one exists (``apache-2.0``, ``cc-by-nc-4.0``), the Hub's own id
   otherwise (``llama3.1``, ``creativeml-openrail-m``, ``gemma``). ``other`` (the author
   said "other") and ``unknown`` (the author said "unknown", or wrote something nothing
   here recognises) stay distinct; a missing or blank value stays ``None``.
2. **Families** (:func:`license_family`): what a licence asks of derivatives, one of
   :data:`FAMILIES`.
3. **Compatibility rules** (:func:`load_license_rules`): ``conf/licenses.yaml`` says, for
   a parent licence and a child licence, whether the child's licence keeps the parent's
   terms (``ok``), breaks them (``conflict``) or cannot be judged (``unknown``). The file
   documents every decision; this module only evaluates it.

Where to change what (one place each):
    * A new spelling of a known licence: add it to that licence's aliases in
      :data:`LICENSES`. Every spelling is *folded* first (case, spaces, ``_``/``-``,
      ``v3``/``3.0``, "License", "Version", ...), so only spellings the fold does not
      already reach need listing; ``fold_license_key("Your Spelling")`` shows the key.
    * A new licence: a new :data:`LICENSES` entry ``id: (family, aliases)``.
    * How spellings are folded: :data:`FOLD_STEPS` (regular expressions that Python and
      Spark both apply, so the two sides cannot drift apart).
    * Whether a parent/child pair is ok: ``conf/licenses.yaml``; no code change.

Implementation details:
    Everything here runs on the driver and is small: a few hundred alias keys and, for the
    rules, one verdict per pair of *distinct* licence ids (a few dozen ids on the whole
    Hub). To apply them to millions of rows, Spark jobs use :func:`license_id_expr` (built-in
    ``lower``/``regexp_replace`` and a literal map; no Python on the executors) and
    broadcast-join the table of :meth:`LicenseRules.verdict_rows`.
"""

from __future__ import annotations

import functools
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Mapping

import yaml

from semfin_spark.settings import default_conf_dir

if TYPE_CHECKING:  # pyspark stays optional for the pure-Python half of this module.
    from pyspark.sql import Column

#: What a licence asks of derivative models. ``share-alike`` is CC BY-SA and other data
#: share-alike licences; ``model-specific`` covers licences written for models with
#: use-based terms that must travel with derivatives (Llama, Gemma, OpenRAIL/RAIL, research
#: licences); ``other`` is a known id whose terms are not known (``other``, ``cc``, ...).
FAMILIES: tuple[str, ...] = (
    "permissive", "public-domain", "weak-copyleft", "copyleft", "share-alike",
    "non-commercial", "no-derivatives", "model-specific", "other", "unknown",
)

#: What a rule can decide for a (parent licence, child licence) pair.
VERDICTS: tuple[str, ...] = ("ok", "conflict", "unknown")

OTHER = "other"
UNKNOWN = "unknown"

# The alias table: licence id -> (family, other spellings). The id itself is always a
# spelling too. Spellings are folded before lookup (see FOLD_STEPS), so "Apache License,
# Version 2.0", "apache_2", "APACHE 2.0" and "license:apache-2.0" need no entry here.
# Unversioned names map to the version the Hub offers (CC 4.0, Apache 2.0, AGPL 3.0);
# "gpl", "lgpl", "bsd" and "cc" are the Hub's own family-level ids and stay as they are.
LICENSES: dict[str, tuple[str, tuple[str, ...]]] = {
    # --- permissive -----------------------------------------------------------------
    "apache-2.0": ("permissive", ("apache", "asl", "asl 2.0", "apache software license 2.0",
                                  "apache software license")),
    "mit": ("permissive", ("expat", "mit/x11", "x11")),
    "bsd": ("permissive", ()),
    "bsd-2-clause": ("permissive", ("bsd-2", "bsd 2-clause simplified", "simplified bsd", "freebsd")),
    "bsd-3-clause": ("permissive", ("bsd-3", "bsd 3-clause new or revised", "new bsd", "revised bsd",
                                    "modified bsd")),
    "bsd-3-clause-clear": ("permissive", ("clear bsd",)),
    "isc": ("permissive", ()),
    "zlib": ("permissive", ("zlib/libpng",)),
    "postgresql": ("permissive", ()),
    "ncsa": ("permissive", ("university of illinois/ncsa open source license", "uiuc")),
    "afl-3.0": ("permissive", ("afl", "academic free license v3.0", "academic free license")),
    "artistic-2.0": ("permissive", ("artistic",)),
    "bsl-1.0": ("permissive", ("boost", "boost software license 1.0", "boost software license")),
    "ecl-2.0": ("permissive", ("educational community license v2.0",)),
    "wtfpl": ("permissive", ("do what the fuck you want to public license",
                              "do what the f*ck you want to public license")),
    "lppl-1.3c": ("permissive", ("latex project public license v1.3c",)),
    "apple-ascl": ("permissive", ("apple sample code license",)),
    "etalab-2.0": ("permissive", ("etalab open license 2.0", "licence ouverte 2.0")),
    "cc-by-2.0": ("permissive", ()),
    "cc-by-2.5": ("permissive", ()),
    "cc-by-3.0": ("permissive", ()),
    "cc-by-4.0": ("permissive", ("cc-by",)),
    "odc-by": ("permissive", ("odc-by-1.0", "open data commons attribution license")),
    "cdla-permissive-1.0": ("permissive", ("community data license agreement permissive 1.0",)),
    "cdla-permissive-2.0": ("permissive", ("community data license agreement permissive 2.0",)),
    # --- public domain --------------------------------------------------------------
    "cc0-1.0": ("public-domain", ("cc0", "cc zero", "creative commons zero v1.0 universal")),
    "unlicense": ("public-domain", ()),
    "pddl": ("public-domain", ("odc-pddl", "pddl-1.0",
                               "open data commons public domain dedication and license")),
    # --- weak copyleft --------------------------------------------------------------
    "lgpl": ("weak-copyleft", ()),
    "lgpl-2.1": ("weak-copyleft", ()),
    "lgpl-3.0": ("weak-copyleft", ()),
    "lgpl-lr": ("weak-copyleft", ("lesser general public license for linguistic resources",)),
    "mpl-2.0": ("weak-copyleft", ("mozilla public license 2.0", "mpl")),
    "epl-1.0": ("weak-copyleft", ("eclipse public license 1.0",)),
    "epl-2.0": ("weak-copyleft", ("eclipse public license 2.0", "epl")),
    "ms-pl": ("weak-copyleft", ("microsoft public license",)),
    "ofl-1.1": ("weak-copyleft", ("sil open font license 1.1", "ofl")),
    # --- copyleft -------------------------------------------------------------------
    "gpl": ("copyleft", ()),
    "gpl-2.0": ("copyleft", ()),
    "gpl-3.0": ("copyleft", ()),
    "agpl-3.0": ("copyleft", ("agpl",)),
    "gfdl": ("copyleft", ("fdl", "gnu free documentation license")),
    "osl-3.0": ("copyleft", ("open software license 3.0",)),
    "eupl-1.1": ("copyleft", ("european union public license 1.1",)),
    "eupl-1.2": ("copyleft", ("european union public license 1.2",)),
    # --- share-alike ----------------------------------------------------------------
    "cc-by-sa-2.0": ("share-alike", ()),
    "cc-by-sa-2.5": ("share-alike", ()),
    "cc-by-sa-3.0": ("share-alike", ()),
    "cc-by-sa-4.0": ("share-alike", ("cc-by-sa",)),
    "odbl": ("share-alike", ("odbl-1.0", "open database license")),
    "cdla-sharing-1.0": ("share-alike", ("community data license agreement sharing 1.0",)),
    # --- non-commercial -------------------------------------------------------------
    "cc-by-nc-2.0": ("non-commercial", ()),
    "cc-by-nc-2.5": ("non-commercial", ()),
    "cc-by-nc-3.0": ("non-commercial", ()),
    "cc-by-nc-4.0": ("non-commercial", ("cc-by-nc",)),
    "cc-by-nc-sa-2.0": ("non-commercial", ()),
    "cc-by-nc-sa-2.5": ("non-commercial", ()),
    "cc-by-nc-sa-3.0": ("non-commercial", ()),
    "cc-by-nc-sa-4.0": ("non-commercial", ("cc-by-nc-sa",)),
    # --- no derivatives (NC-ND too: "no adaptations" is the stricter term) ----------
    "cc-by-nd-2.0": ("no-derivatives", ()),
    "cc-by-nd-2.5": ("no-derivatives", ()),
    "cc-by-nd-3.0": ("no-derivatives", ()),
    "cc-by-nd-4.0": ("no-derivatives", ("cc-by-nd",)),
    "cc-by-nc-nd-2.0": ("no-derivatives", ()),
    "cc-by-nc-nd-2.5": ("no-derivatives", ()),
    "cc-by-nc-nd-3.0": ("no-derivatives", ()),
    "cc-by-nc-nd-4.0": ("no-derivatives", ("cc-by-nc-nd",)),
    # --- model-specific (use-based terms that derivatives must keep) ----------------
    "llama2": ("model-specific", ()),
    "llama3": ("model-specific", ()),
    "llama3.1": ("model-specific", ()),
    "llama3.2": ("model-specific", ()),
    "llama3.3": ("model-specific", ()),
    "llama4": ("model-specific", ()),
    "gemma": ("model-specific", ("gemma terms of use",)),
    "openrail": ("model-specific", ("openrail-m",)),
    "openrail++": ("model-specific", ("openrail++-m",)),
    "creativeml-openrail-m": ("model-specific", ()),
    "bigscience-openrail-m": ("model-specific", ()),
    "bigscience-bloom-rail-1.0": ("model-specific", ("bloom rail 1.0", "bigscience bloom rail")),
    "bigcode-openrail-m": ("model-specific", ("bigcode open rail-m v1",)),
    "deepfloyd-if-license": ("model-specific", ("deepfloyd if research license agreement",)),
    "fair-noncommercial-research-license": ("model-specific", ()),
    "apple-amlr": ("model-specific", ("apple machine learning research model license",)),
    "intel-research": ("model-specific", ("intel research use license",)),
    "h-research": ("model-specific", ()),
    # --- ids whose terms are not known ---------------------------------------------
    "cc": ("other", ()),
    "c-uda": ("other", ("computational use of data agreement",)),
    "other": ("other", ("others",)),
    "unknown": ("unknown", ("none", "n/a", "unspecified", "not specified", "tbd")),
}

# Folding rules, applied in order to the lower-cased spelling, by Python (re.sub) and by
# Spark (regexp_replace, Java regex): keep to syntax both engines read the same way and to
# literal replacements (no group references). Step 1 leaves only ASCII [a-z0-9.+ ], so
# the \b of step 2 means the same in both engines.
FOLD_STEPS: tuple[tuple[str, str], ...] = (
    # Separators, quotes and anything non-ASCII become spaces; "." and "+" carry versions
    # and "openrail++".
    (r"[^a-z0-9.+]+", " "),
    # Words authors wrap around the name ("The MIT License", "license:mit" tags,
    # "Version 2.0", "4.0 International", "Llama 2 Community License Agreement", the Hub's
    # "GNU General Public License family").
    (r"\b(licen[cs]es?|version|the|agreement|community|international|unported|generic|family)\b",
     " "),
    # "v3", "v 3" -> "3" ("GPLv3", "Academic Free License v3.0").
    (r"v(?= ?[0-9])", ""),
    # "2 0" (from "APACHE_2_0", "cc_by_4_0") -> "2.0".
    (r"(?<=[0-9]) +(?=[0-9])", "."),
    (r" ", ""),
    # "2.0" -> "2", so "apache 2", "apache-2.0" and "apache2" meet.
    (r"\.0+(?![0-9])", ""),
    # "-or-later", "-only" and "+" after a version: the Hub's ids do not carry them.
    (r"(?<=[0-9])(orlater|only|\+)", ""),
    # "3.1" -> "31", so "llama3.1" and "llama3_1" meet.
    (r"\.", ""),
    # Spelled-out names of the Creative Commons terms and of the GNU licences.
    (r"creativecommons", "cc"),
    (r"attribution", "by"),
    (r"noncommercial", "nc"),
    (r"sharealike", "sa"),
    (r"noderivatives|noderivs", "nd"),
    (r"lessergeneralpublic|librarygeneralpublic", "lgpl"),
    (r"afferogeneralpublic", "agpl"),
    (r"generalpublic", "gpl"),
    (r"metallama", "llama"),
    (r"^gnu", ""),
)

# Characters that alone make a value blank (None): whitespace and quotes.
_BLANK = r"""[ \t\n\r\f\x0b'"`]"""

_FOLD_RE = tuple((re.compile(pattern), replacement) for pattern, replacement in FOLD_STEPS)
_BLANK_RE = re.compile(_BLANK + "*")


def fold_license_key(raw: str) -> str:
    """The lookup key of a licence spelling: lower-cased, punctuation and filler folded.

    :func:`license_key_expr` computes the same key in Spark.

    Args:
        raw: a licence spelling as an author wrote it.

    Returns:
        The key; ``""`` when nothing of the spelling is left.

    Examples:
        >>> fold_license_key("Apache License, Version 2.0")
        'apache2'
        >>> fold_license_key("CC BY-NC-SA 4.0 International"), fold_license_key("Llama-3.1")
        ('ccbyncsa4', 'llama31')
    """
    key = raw.lower()
    for pattern, replacement in _FOLD_RE:
        key = pattern.sub(replacement, key)
    return key


def _build_aliases() -> dict[str, str]:
    aliases: dict[str, str] = {}
    for license_id, (family, spellings) in LICENSES.items():
        if family not in FAMILIES:
            raise ValueError(f"LICENSES[{license_id!r}]: unknown family {family!r}")
        for spelling in (license_id, *spellings):
            key = fold_license_key(spelling)
            owner = aliases.setdefault(key, license_id)
            # A key shared by two ids would make the result depend on dict order.
            if not key or owner != license_id:
                raise ValueError(f"LICENSES: spelling {spelling!r} of {license_id!r} folds to "
                                 f"{key!r}, already the key of {owner!r}")
    return aliases


_ALIASES: dict[str, str] = _build_aliases()


def _is_blank(raw: str) -> bool:
    return _BLANK_RE.fullmatch(raw) is not None


def normalize_license(raw: str | None) -> str | None:
    """The licence id of one spelling (card data ``license``, a ``license:<x>`` tag).

    Args:
        raw: the spelling; surrounding quotes and whitespace are ignored. A list from card
            data goes through :func:`normalize_card_license` instead.

    Returns:
        The id (a key of :data:`LICENSES`): ``other`` when the author wrote "other",
        ``unknown`` when the spelling is not recognised, ``None`` when ``raw`` is None or
        blank.

    Raises:
        TypeError: ``raw`` is neither a string nor None.

    Examples:
        >>> [normalize_license(s) for s in ("Apache License 2.0", "MIT License", "gplv3")]
        ['apache-2.0', 'mit', 'gpl-3.0']
        >>> [normalize_license(s) for s in ("CC BY-NC 4.0", "llama3_1", "license:other")]
        ['cc-by-nc-4.0', 'llama3.1', 'other']
        >>> normalize_license("my own terms"), normalize_license("  ''  ")
        ('unknown', None)
    """
    if raw is None:
        return None
    if not isinstance(raw, str):
        raise TypeError(f"normalize_license takes a string or None, not {type(raw).__name__} "
                        f"({raw!r}); use normalize_card_license for card data values")
    return _lookup(raw)


# A few dozen spellings cover the whole Hub, so every call after the first is a cache hit.
@functools.lru_cache(maxsize=65536)
def _lookup(raw: str) -> str | None:
    if _is_blank(raw):
        return None
    return _ALIASES.get(fold_license_key(raw), UNKNOWN)


def normalize_license_list(values: Iterable[Any]) -> list[str]:
    """The distinct licence ids of several spellings, in first-seen order, Nones dropped.

    Args:
        values: spellings; non-strings (a YAML ``license: 2.0``) are read as their text.

    Examples:
        >>> normalize_license_list(["MIT", "mit", None, "Apache 2.0", "???"])
        ['mit', 'apache-2.0', 'unknown']
    """
    ids: list[str] = []
    for value in values:
        if value is not None and not isinstance(value, str):
            value = str(value)
        license_id = normalize_license(value)
        if license_id is not None and license_id not in ids:
            ids.append(license_id)
    return ids


def normalize_card_license(value: Any) -> str | None:
    """The one licence id of a card data ``license`` value: a string or a list of them.

    A list (a dual-licensed model) gives its first recognised id; ``other`` when the only
    entries are ``other``/unrecognised and one of them is ``other``; ``unknown`` when none
    is recognised; ``None`` when it is empty. Other types are read as their text.

    Examples:
        >>> normalize_card_license(["mit"]), normalize_card_license(["Other", "MIT License"])
        ('mit', 'mit')
        >>> normalize_card_license(["other", "?"]), normalize_card_license([])
        ('other', None)
        >>> normalize_card_license("Apache-2")
        'apache-2.0'
    """
    if isinstance(value, (list, tuple)):
        ids = normalize_license_list(value)
        for license_id in ids:
            if license_id not in (OTHER, UNKNOWN):
                return license_id
        return OTHER if OTHER in ids else (ids[0] if ids else None)
    if value is not None and not isinstance(value, str):
        value = str(value)
    return normalize_license(value)


def license_family(license_id: str | None) -> str:
    """The family of a licence: one of :data:`FAMILIES`.

    Args:
        license_id: a licence id; any other spelling is normalised first. ``None`` and
            unrecognised spellings give ``unknown``.

    Examples:
        >>> [license_family(i) for i in ("mit", "cc0-1.0", "cc-by-sa-4.0", "llama3.1", "other")]
        ['permissive', 'public-domain', 'share-alike', 'model-specific', 'other']
        >>> license_family("CC BY-NC-ND 4.0"), license_family(None)
        ('no-derivatives', 'unknown')
    """
    entry = LICENSES.get(license_id) if license_id is not None else None
    if entry is None:
        normalised = normalize_license(license_id)
        entry = LICENSES.get(normalised) if normalised is not None else None
    return entry[0] if entry is not None else UNKNOWN


def license_alias_items() -> list[tuple[str, str]]:
    """Every (folded key, licence id) pair of the alias table, sorted by key.

    For a Spark join: build a small DataFrame of these pairs, broadcast it, and left-join
    it on :func:`license_key_expr` of the raw column. A raw value that is not blank but
    finds no row is ``unknown``; a null or blank one (see :func:`license_id_expr`) stays
    null. :func:`license_id_expr` does the same without a join.

    Examples:
        >>> ("apache2", "apache-2.0") in license_alias_items()
        True
        >>> aliases = spark.createDataFrame(license_alias_items(),
        ...                                 "license_key string, license_id string")  # doctest: +SKIP
        >>> models.join(F.broadcast(aliases),
        ...             license_key_expr("raw_license") == aliases.license_key, "left")  # doctest: +SKIP
    """
    return sorted(_ALIASES.items())


def license_key_expr(col: "Column | str") -> "Column":
    """A Spark column of :func:`fold_license_key` of ``col``, with built-in functions only.

    Args:
        col: a string column (or its name) of raw spellings; nulls stay null.

    Examples:
        >>> df.select(license_key_expr("license"))  # doctest: +SKIP
    """
    from pyspark.sql import functions as F

    key = F.lower(F.col(col) if isinstance(col, str) else col)
    for pattern, replacement in FOLD_STEPS:
        key = F.regexp_replace(key, pattern, replacement)
    return key


def license_id_expr(col: "Column | str") -> "Column":
    """A Spark column of :func:`normalize_license` of ``col``: no UDF, no join.

    Null or blank values (whitespace and quotes only) give null; a key of the alias table
    gives its id; any other value gives ``unknown``.

    Args:
        col: a string column (or its name) of raw spellings.

    Implementation details:
        The alias table travels inside the plan as a literal map of a few hundred entries;
        executors run ``lower``, ``regexp_replace`` and a map lookup.

    Examples:
        >>> df.select(license_id_expr("license").alias("license"))  # doctest: +SKIP
    """
    from pyspark.sql import functions as F

    raw = F.col(col) if isinstance(col, str) else col
    table = F.create_map(*[F.lit(x) for item in license_alias_items() for x in item])
    blank = raw.isNull() | (F.regexp_replace(raw, _BLANK, "") == F.lit(""))
    return F.when(blank, F.lit(None).cast("string")).otherwise(
        F.coalesce(F.try_element_at(table, license_key_expr(raw)), F.lit(UNKNOWN)))


# --- compatibility rules ------------------------------------------------------------

class LicenseRulesError(ValueError):
    """``conf/licenses.yaml`` is malformed; the message names the file and the rule."""


_VERSIONED = re.compile(r"^(?P<base>[a-z][a-z0-9+.-]*?)-(?P<version>[0-9]+(?:\.[0-9]+)*)$")


def _split_version(license_id: str) -> tuple[str, tuple[int, ...]] | None:
    """``cc-by-sa-3.0`` -> ``("cc-by-sa", (3, 0))``; ids without a ``-<version>`` -> None."""
    match = _VERSIONED.match(license_id)
    if match is None:
        return None
    return match["base"], tuple(int(p) for p in match["version"].split("."))


@dataclass(frozen=True)
class Verdict:
    """What the rules say about one (parent licence, child licence) pair.

    Attributes:
        verdict: ``ok``, ``conflict`` or ``unknown``.
        rule: the name of the rule that decided.
        reason: that rule's reason, for a user reading a report.
    """

    verdict: str
    rule: str
    reason: str


@dataclass(frozen=True)
class LicenseCondition:
    """One side of a rule. A licence matches when it satisfies ANY of the set criteria.

    Attributes:
        ids: licence ids.
        families: licence families (:data:`FAMILIES`).
        missing: matches a missing licence (None). Ids and families never match None.
        same_as_parent: (child only) the child's id equals the parent's.
        same_or_later_version: (child only) the child is the parent's licence at the same
            or a later version (``cc-by-sa-3.0`` -> ``cc-by-sa-4.0``); only ids ending in
            ``-<version>`` have versions.
    """

    ids: frozenset[str] = frozenset()
    families: frozenset[str] = frozenset()
    missing: bool = False
    same_as_parent: bool = False
    same_or_later_version: bool = False

    def matches(self, license_id: str | None, parent_id: str | None = None) -> bool:
        """Whether ``license_id`` (whose parent licence is ``parent_id``) matches."""
        if license_id is None:
            return self.missing
        if license_id in self.ids or license_family(license_id) in self.families:
            return True
        if parent_id is None:
            return False
        if self.same_as_parent and license_id == parent_id:
            return True
        if self.same_or_later_version:
            child, parent = _split_version(license_id), _split_version(parent_id)
            return (child is not None and parent is not None and child[0] == parent[0]
                    and child[1] >= parent[1])
        return False


@dataclass(frozen=True)
class LicenseRule:
    """One rule of ``conf/licenses.yaml``: conditions on both sides and a verdict.

    A side without a condition (None) matches anything, a missing licence included.
    """

    name: str
    verdict: str
    reason: str
    parent: LicenseCondition | None = None
    child: LicenseCondition | None = None

    def matches(self, parent_id: str | None, child_id: str | None) -> bool:
        """Whether the rule applies to this pair of (normalised) licence ids."""
        return ((self.parent is None or self.parent.matches(parent_id))
                and (self.child is None or self.child.matches(child_id, parent_id)))


@dataclass(frozen=True)
class LicenseRules:
    """The ordered rules of a licence rules file; the first rule that matches decides.

    Attributes:
        rules: the rules in file order; the last one matches every pair.
        source: where they came from (for messages).
    """

    rules: tuple[LicenseRule, ...]
    source: str = "<rules>"

    @classmethod
    def from_dict(cls, data: Any, source: str = "<rules>") -> "LicenseRules":
        """Rules from the parsed content of a rules file (see ``conf/licenses.yaml``).

        Raises:
            LicenseRulesError: the content is malformed; the message names the rule.

        Examples:
            >>> rules = LicenseRules.from_dict({"rules": [
            ...     {"name": "nc", "parent": {"families": ["non-commercial"]},
            ...      "verdict": "conflict", "reason": "NC parent"},
            ...     {"name": "default", "verdict": "ok", "reason": "anything else"}]})
            >>> rules.check("cc-by-nc-4.0", "mit").rule, rules.check("mit", "gpl-3.0").verdict
            ('nc', 'ok')
        """
        return cls(tuple(_parse_rules(data, source)), source)

    def check(self, parent_license: str | None, child_license: str | None) -> Verdict:
        """The verdict of the first rule matching a parent and a child licence.

        Args:
            parent_license: the parent's licence id (other spellings are normalised).
            child_license: the child's licence id (other spellings are normalised).

        Examples:
            >>> rules = load_license_rules(DEFAULT_RULES_FILE)
            >>> verdict = rules.check("llama3.1", "apache-2.0")
            >>> verdict.verdict, verdict.rule
            ('conflict', 'model-specific-parent')
            >>> verdict.reason[:40]
            "The parent's model licence (Llama, Gemma"
            >>> rules.check("Apache 2.0", "cc-by-nc-4.0").verdict, rules.check("other", "mit").verdict
            ('ok', 'unknown')
        """
        parent, child = normalize_license(parent_license), normalize_license(child_license)
        for rule in self.rules:
            if rule.matches(parent, child):
                return Verdict(rule.verdict, rule.name, rule.reason)
        # Unreachable for parsed rules (the last one matches every pair); kept for hand-built ones.
        return Verdict(UNKNOWN, "no-rule", "no rule matched")

    def verdict_rows(self, license_ids: Iterable[str | None]
                     ) -> list[tuple[str | None, str | None, str, str, str]]:
        """``(parent, child, verdict, rule, reason)`` for every ordered pair of the ids.

        ``license_ids`` are the distinct licences present (None included when some models
        have none); the table has their square, small enough to broadcast-join against
        millions of lineage edges with ``eqNullSafe`` on both licence columns. Values are
        returned as given, so they join back to the column they came from.

        Examples:
            >>> rules = load_license_rules(DEFAULT_RULES_FILE)
            >>> [r[:3] for r in rules.verdict_rows(["mit", "cc-by-nc-4.0"])]  # doctest: +NORMALIZE_WHITESPACE
            [('mit', 'mit', 'ok'), ('mit', 'cc-by-nc-4.0', 'ok'),
             ('cc-by-nc-4.0', 'mit', 'conflict'), ('cc-by-nc-4.0', 'cc-by-nc-4.0', 'ok')]
        """
        distinct = list(dict.fromkeys(license_ids))
        return [(parent, child, *_as_tuple(self.check(parent, child)))
                for parent in distinct for child in distinct]


def _as_tuple(verdict: Verdict) -> tuple[str, str, str]:
    return verdict.verdict, verdict.rule, verdict.reason


#: The shipped rules: ``licenses.yaml`` of the package's (or the checkout's) ``conf/``.
DEFAULT_RULES_FILE: Path = default_conf_dir() / "licenses.yaml"


def load_license_rules(path: str | os.PathLike[str]) -> LicenseRules:
    """Read and check a licence rules file (``conf/licenses.yaml`` documents the format).

    Args:
        path: the YAML file.

    Returns:
        The rules, in file order.

    Raises:
        FileNotFoundError: no such file.
        LicenseRulesError: (a ``ValueError``) malformed YAML or rules: unknown family or
            id, missing name or reason, bad verdict, unknown key, or a last rule that does
            not match every pair. The message names the file and the rule.

    Examples:
        >>> rules = load_license_rules(DEFAULT_RULES_FILE)
        >>> rules.rules[-1].name, rules.check("cc-by-nd-4.0", "cc-by-nd-4.0").verdict
        ('default', 'conflict')
    """
    with open(path, encoding="utf-8") as handle:
        text = handle.read()
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise LicenseRulesError(f"{path}: not valid YAML: {exc}") from exc
    return LicenseRules.from_dict(data, source=str(path))


_RULE_KEYS = {"name", "reason", "verdict", "parent", "child"}
_PARENT_KEYS = {"ids", "families", "missing"}
_CHILD_KEYS = _PARENT_KEYS | {"same_as_parent", "same_or_later_version"}


def _parse_rules(data: Any, source: str) -> list[LicenseRule]:
    if not isinstance(data, Mapping) or set(data) != {"rules"}:
        found = sorted(data) if isinstance(data, Mapping) else type(data).__name__
        raise LicenseRulesError(f"{source}: expected a mapping with one key, 'rules' (found {found})")
    raw_rules = data["rules"]
    if not isinstance(raw_rules, list) or not raw_rules:
        raise LicenseRulesError(f"{source}: 'rules' must be a non-empty list")
    rules: list[LicenseRule] = []
    seen: set[str] = set()
    for position, raw in enumerate(raw_rules, start=1):
        rule = _parse_rule(raw, source, position)
        if rule.name in seen:
            raise LicenseRulesError(f"{source}: rule {rule.name!r}: the name is used twice")
        seen.add(rule.name)
        rules.append(rule)
    for rule in rules[:-1]:
        if rule.parent is None and rule.child is None:
            raise LicenseRulesError(f"{source}: rule {rule.name!r} matches every pair, so the "
                                    f"rules after it never run; make it the last rule")
    last = rules[-1]
    if last.parent is not None or last.child is not None:
        raise LicenseRulesError(f"{source}: the last rule ({last.name!r}) must be the default: "
                                f"no 'parent' or 'child' condition, so every pair gets a verdict")
    return rules


def _parse_rule(raw: Any, source: str, position: int) -> LicenseRule:
    if not isinstance(raw, Mapping):
        raise LicenseRulesError(f"{source}: rule #{position} is a {type(raw).__name__}, "
                                f"not a mapping")
    name = raw.get("name")
    if not isinstance(name, str) or not name.strip():
        raise LicenseRulesError(f"{source}: rule #{position}: missing 'name' (a non-empty string)")
    where = f"{source}: rule {name!r}"
    unknown_keys = set(raw) - _RULE_KEYS
    if unknown_keys:
        raise LicenseRulesError(f"{where}: unknown key(s) {sorted(unknown_keys)}; "
                                f"allowed: {sorted(_RULE_KEYS)}")
    reason = raw.get("reason")
    if not isinstance(reason, str) or not reason.strip():
        raise LicenseRulesError(f"{where}: missing 'reason' (say why, for the report's reader)")
    verdict = raw.get("verdict")
    if verdict not in VERDICTS:
        raise LicenseRulesError(f"{where}: verdict {verdict!r} is not one of {list(VERDICTS)}")
    return LicenseRule(name=name, verdict=verdict, reason=" ".join(reason.split()),
                       parent=_parse_condition(raw.get("parent"), f"{where}, parent", _PARENT_KEYS),
                       child=_parse_condition(raw.get("child"), f"{where}, child", _CHILD_KEYS))


def _parse_condition(raw: Any, where: str, allowed: set[str]) -> LicenseCondition | None:
    if raw is None:
        return None
    if not isinstance(raw, Mapping) or not raw:
        raise LicenseRulesError(f"{where}: a condition is a non-empty mapping with keys "
                                f"{sorted(allowed)}")
    unknown_keys = set(raw) - allowed
    if unknown_keys:
        raise LicenseRulesError(f"{where}: unknown key(s) {sorted(unknown_keys)}; "
                                f"allowed: {sorted(allowed)}")
    flags = {}
    for key in ("missing", "same_as_parent", "same_or_later_version"):
        value = raw.get(key, False)
        if not isinstance(value, bool):
            raise LicenseRulesError(f"{where}: '{key}' must be true or false, not {value!r}")
        flags[key] = value
    families = _string_list(raw.get("families"), f"{where}, families")
    for family in families:
        if family not in FAMILIES:
            raise LicenseRulesError(f"{where}: unknown family {family!r}; families: {list(FAMILIES)}")
    ids = _string_list(raw.get("ids"), f"{where}, ids")
    for license_id in ids:
        if license_id not in LICENSES:
            hint = normalize_license(license_id)
            suggestion = f"; did you mean {hint!r}?" if hint not in (None, UNKNOWN) else ""
            raise LicenseRulesError(f"{where}: {license_id!r} is not a licence id of "
                                    f"semfin_spark.licenses.LICENSES{suggestion}")
    if not (ids or families or any(flags.values())):
        raise LicenseRulesError(f"{where}: the condition matches nothing")
    return LicenseCondition(ids=frozenset(ids), families=frozenset(families), **flags)


def _string_list(raw: Any, where: str) -> list[str]:
    if raw is None:
        return []
    if isinstance(raw, str):
        raw = [raw]
    if not isinstance(raw, list) or not all(isinstance(v, str) for v in raw):
        raise LicenseRulesError(f"{where}: expected a list of strings, not {raw!r}")
    return raw
