"""Licences: spellings to ids, families, the real Hub's spellings, Spark folding, the rules."""

from __future__ import annotations

import gzip
import json
from collections import Counter

import pytest
import yaml
from pyspark.sql import functions as F

from semfin_spark.licenses import (DEFAULT_RULES_FILE, FAMILIES, LICENSES, VERDICTS, LicenseRules,
                                   LicenseRulesError, fold_license_key, license_alias_items,
                                   license_family, license_id_expr, license_key_expr,
                                   load_license_rules, normalize_card_license, normalize_license,
                                   normalize_license_list)

REAL_FILES = ("hub2025_trees.jsonl.gz", "hub2022_dev.jsonl.gz")

# Real spellings that may map to `unknown`, each with the reason.
EXPECTED_UNKNOWN = {
    "unknown": "the author declared the Hub's `unknown` licence",
    "license:unknown": "the Hub's tag for a card declaring `unknown`",
}


# --- normalisation ---------------------------------------------------------------------

VARIANTS = [
    # (spelling, id)
    ("apache-2.0", "apache-2.0"),
    ("apache2", "apache-2.0"),
    ("apache 2.0", "apache-2.0"),
    ("Apache License 2.0", "apache-2.0"),
    ("Apache License, Version 2.0", "apache-2.0"),
    ("Apache-2", "apache-2.0"),
    ("APACHE_2_0", "apache-2.0"),
    ("  'Apache-2.0'  ", "apache-2.0"),
    ('"mit"', "mit"),
    ("MIT License", "mit"),
    ("The MIT License", "mit"),
    ("license:mit", "mit"),
    ("cc-by-nc 4.0", "cc-by-nc-4.0"),
    ("CC BY-NC 4.0", "cc-by-nc-4.0"),
    ("cc_by_nc_4.0", "cc-by-nc-4.0"),
    ("Creative Commons Attribution-NonCommercial 4.0 International", "cc-by-nc-4.0"),
    ("CC BY-NC-SA 4.0", "cc-by-nc-sa-4.0"),
    ("CC BY-NC-ND 3.0", "cc-by-nc-nd-3.0"),
    ("Creative Commons Attribution-ShareAlike 3.0 Unported", "cc-by-sa-3.0"),
    ("CC-BY-SA-4.0", "cc-by-sa-4.0"),
    ("cc by 2.5", "cc-by-2.5"),
    ("CC-BY", "cc-by-4.0"),
    ("CC0", "cc0-1.0"),
    ("gplv3", "gpl-3.0"),
    ("GPL-3", "gpl-3.0"),
    ("GPLv2", "gpl-2.0"),
    ("GNU GPL v3", "gpl-3.0"),
    ("GPL-3.0-or-later", "gpl-3.0"),
    ("gpl-3.0+", "gpl-3.0"),
    ("GNU General Public License v2.0", "gpl-2.0"),
    ("gpl", "gpl"),
    ("LGPLv2.1", "lgpl-2.1"),
    ("LGPL-3.0-only", "lgpl-3.0"),
    ("GNU Affero General Public License v3.0", "agpl-3.0"),
    ("AGPL", "agpl-3.0"),
    ("MPL 2.0", "mpl-2.0"),
    ("BSD 3-Clause", "bsd-3-clause"),
    ("bsd-3", "bsd-3-clause"),
    ("New BSD", "bsd-3-clause"),
    ("BSD-2-Clause", "bsd-2-clause"),
    ("Boost Software License 1.0", "bsl-1.0"),
    ("llama 2", "llama2"),
    ("Llama-2", "llama2"),
    ("Llama 2 Community License Agreement", "llama2"),
    ("Llama-3.1", "llama3.1"),
    ("llama3_1", "llama3.1"),
    ("LLAMA 3.1", "llama3.1"),
    ("Meta Llama 3 Community License", "llama3"),
    ("llama3.3", "llama3.3"),
    ("Llama 4", "llama4"),
    ("Gemma", "gemma"),
    ("gemma-terms-of-use", "gemma"),
    ("OpenRAIL", "openrail"),
    ("openrail++", "openrail++"),
    ("CreativeML OpenRAIL-M", "creativeml-openrail-m"),
    ("bigscience-bloom-rail-1.0", "bigscience-bloom-rail-1.0"),
    ("intel-research-use-license", "intel-research"),
    ("The Unlicense", "unlicense"),
    ("WTFPL", "wtfpl"),
    ("Other", "other"),
    ("license:other", "other"),
    ("unknown", "unknown"),
    ("my own terms, see LICENSE", "unknown"),
    ("???", "unknown"),
    ("license", "unknown"),
]

# The Hub's own table (docs/hub/repositories-licenses.md): full name -> id.
HUB_FULL_NAMES = [
    ("Apache license 2.0", "apache-2.0"), ("MIT", "mit"), ("OpenRAIL license family", "openrail"),
    ("BigScience OpenRAIL-M", "bigscience-openrail-m"),
    ("CreativeML OpenRAIL-M", "creativeml-openrail-m"),
    ("BigScience BLOOM RAIL 1.0", "bigscience-bloom-rail-1.0"),
    ("BigCode Open RAIL-M v1", "bigcode-openrail-m"), ("Academic Free License v3.0", "afl-3.0"),
    ("Artistic license 2.0", "artistic-2.0"), ("Boost Software License 1.0", "bsl-1.0"),
    ("BSD license family", "bsd"), ('BSD 2-clause "Simplified" license', "bsd-2-clause"),
    ('BSD 3-clause "New" or "Revised" license', "bsd-3-clause"),
    ("BSD 3-clause Clear license", "bsd-3-clause-clear"),
    ("Computational Use of Data Agreement", "c-uda"), ("Creative Commons license family", "cc"),
    ("Creative Commons Zero v1.0 Universal", "cc0-1.0"),
    ("Creative Commons Attribution 2.0", "cc-by-2.0"),
    ("Creative Commons Attribution 4.0", "cc-by-4.0"),
    ("Creative Commons Attribution Share Alike 3.0", "cc-by-sa-3.0"),
    ("Creative Commons Attribution Non Commercial 2.0", "cc-by-nc-2.0"),
    ("Creative Commons Attribution No Derivatives 4.0", "cc-by-nd-4.0"),
    ("Creative Commons Attribution Non Commercial No Derivatives 3.0", "cc-by-nc-nd-3.0"),
    ("Creative Commons Attribution Non Commercial Share Alike 4.0", "cc-by-nc-sa-4.0"),
    ("Community Data License Agreement – Sharing, Version 1.0", "cdla-sharing-1.0"),
    ("Community Data License Agreement – Permissive, Version 2.0", "cdla-permissive-2.0"),
    ("Do What The F*ck You Want To Public License", "wtfpl"),
    ("Educational Community License v2.0", "ecl-2.0"), ("Eclipse Public License 1.0", "epl-1.0"),
    ("Etalab Open License 2.0", "etalab-2.0"), ("European Union Public License 1.1", "eupl-1.1"),
    ("GNU Affero General Public License v3.0", "agpl-3.0"),
    ("GNU Free Documentation License family", "gfdl"),
    ("GNU General Public License family", "gpl"), ("GNU General Public License v3.0", "gpl-3.0"),
    ("GNU Lesser General Public License family", "lgpl"),
    ("GNU Lesser General Public License v2.1", "lgpl-2.1"), ("ISC", "isc"),
    ("LaTeX Project Public License v1.3c", "lppl-1.3c"), ("Microsoft Public License", "ms-pl"),
    ("Mozilla Public License 2.0", "mpl-2.0"),
    ("Open Data Commons License Attribution family", "odc-by"),
    ("Open Database License family", "odbl"), ("Open Rail++-M License", "openrail++"),
    ("Open Software License 3.0", "osl-3.0"), ("PostgreSQL License", "postgresql"),
    ("SIL Open Font License 1.1", "ofl-1.1"),
    ("University of Illinois/NCSA Open Source License", "ncsa"), ("The Unlicense", "unlicense"),
    ("zLib License", "zlib"),
    ("Open Data Commons Public Domain Dedication and License", "pddl"),
    ("Lesser General Public License For Linguistic Resources", "lgpl-lr"),
    ("DeepFloyd IF Research License Agreement", "deepfloyd-if-license"),
    ("Llama 2 Community License Agreement", "llama2"), ("Gemma Terms of Use", "gemma"),
    ("Unknown", "unknown"), ("Other", "other"),
]


@pytest.mark.parametrize("spelling, expected", VARIANTS + HUB_FULL_NAMES)
def test_spelling_maps_to_id(spelling, expected):
    assert normalize_license(spelling) == expected


@pytest.mark.parametrize("blank", [None, "", "   ", "''", ' " " ', "\t\n", "``"])
def test_missing_or_blank_licence_is_none(blank):
    assert normalize_license(blank) is None


def test_other_and_unknown_stay_distinct():
    assert normalize_license("other") == "other"
    assert normalize_license("Unknown") == "unknown"
    assert normalize_license("some-licence-nobody-wrote") == "unknown"
    assert license_family("other") == "other"
    assert license_family("unknown") == "unknown"


def test_a_list_is_refused_by_the_scalar_function():
    with pytest.raises(TypeError, match="normalize_card_license"):
        normalize_license(["mit"])  # type: ignore[arg-type]


@pytest.mark.parametrize("value, expected", [
    (["mit"], "mit"),
    (["MIT", "Apache-2.0"], "mit"),
    (["other", "Apache 2.0"], "apache-2.0"),
    (["???", "other"], "other"),
    (["???"], "unknown"),
    ([None, "  "], None),
    ([], None),
    (None, None),
    ("cc-by-4.0", "cc-by-4.0"),
    (2.0, "unknown"),
])
def test_card_licence_value_picks_one_id(value, expected):
    assert normalize_card_license(value) == expected


def test_licence_list_keeps_distinct_ids_in_order():
    assert normalize_license_list(["Apache-2.0", "mit", "apache 2", None, "x y z"]) == [
        "apache-2.0", "mit", "unknown"]


def test_every_id_is_its_own_spelling_and_has_a_known_family():
    for license_id, (family, _aliases) in LICENSES.items():
        assert normalize_license(license_id) == license_id
        assert normalize_license(license_id.upper()) == license_id
        assert family in FAMILIES
        assert license_family(license_id) == family


def test_no_alias_is_redundant():
    """An alias the fold already reaches is noise for the next person editing the table."""
    for license_id, (_family, aliases) in LICENSES.items():
        keys = [fold_license_key(license_id), *(fold_license_key(a) for a in aliases)]
        assert len(set(keys)) == len(keys), (license_id, keys)


def test_families_of_requested_ids():
    expected = {
        "apache-2.0": "permissive", "mit": "permissive", "bsd-3-clause": "permissive",
        "cc-by-4.0": "permissive", "cc0-1.0": "public-domain", "unlicense": "public-domain",
        "pddl": "public-domain", "lgpl-3.0": "weak-copyleft", "mpl-2.0": "weak-copyleft",
        "gpl-3.0": "copyleft", "agpl-3.0": "copyleft", "cc-by-sa-4.0": "share-alike",
        "odbl": "share-alike", "cc-by-nc-4.0": "non-commercial",
        "cc-by-nc-sa-4.0": "non-commercial", "cc-by-nd-4.0": "no-derivatives",
        "cc-by-nc-nd-4.0": "no-derivatives", "llama2": "model-specific",
        "llama3.1": "model-specific", "gemma": "model-specific",
        "creativeml-openrail-m": "model-specific", "bigscience-bloom-rail-1.0": "model-specific",
        "deepfloyd-if-license": "model-specific", "cc": "other", "other": "other",
        "unknown": "unknown",
    }
    assert {i: license_family(i) for i in expected} == expected
    assert license_family("Apache License 2.0") == "permissive"
    assert license_family(None) == "unknown"
    assert license_family("not a licence") == "unknown"


# --- the real Hub's spellings --------------------------------------------------------

@pytest.fixture(scope="module")
def real_spellings(shared_data) -> Counter:
    """Every licence spelling of the real files (card `license`, str or list; `license:` tags)."""
    spellings: Counter = Counter()
    for name in REAL_FILES:
        with gzip.open(shared_data / name, "rt", encoding="utf-8") as fh:
            for line in fh:
                record = json.loads(line)
                card = record.get("cardData")
                value = card.get("license") if isinstance(card, dict) else None
                for item in value if isinstance(value, list) else [value]:
                    if isinstance(item, str):
                        spellings[item] += 1
                for tag in record.get("tags") or []:
                    if isinstance(tag, str) and tag.startswith("license:"):
                        spellings[tag] += 1
    assert len(spellings) > 50, "expected the real files to hold many licence spellings"
    return spellings


def test_every_real_spelling_maps_to_a_known_id(real_spellings):
    unknown = sorted(s for s in real_spellings if normalize_license(s) == "unknown")
    assert unknown == sorted(EXPECTED_UNKNOWN)
    for spelling in real_spellings:
        license_id = normalize_license(spelling)
        assert license_id in LICENSES, spelling
        assert license_family(license_id) in FAMILIES
        if spelling not in EXPECTED_UNKNOWN:
            assert license_family(license_id) != "unknown", spelling


def test_real_tags_and_card_values_agree(real_spellings):
    """A `license:<x>` tag and the card's `<x>` normalise to the same id."""
    for spelling in real_spellings:
        if spelling.startswith("license:"):
            assert normalize_license(spelling) == normalize_license(spelling[len("license:"):])


def test_real_list_values_are_picked(shared_data):
    picked = {}
    with gzip.open(shared_data / "hub2022_dev.jsonl.gz", "rt", encoding="utf-8") as fh:
        for line in fh:
            record = json.loads(line)
            value = (record.get("cardData") or {}).get("license")
            if isinstance(value, list):
                picked[record["id"]] = normalize_card_license(value)
    assert picked and all(v in LICENSES for v in picked.values())
    assert picked.get("prajjwal1/bert-small") == "mit"


# --- Spark: the same folding with built-in functions --------------------------------

ODD_SPELLINGS = [None, "", "  ", "''", "\u00a0", "???", "license", "Ａpache 2.0", "İnternational",
                 "许可 license mit", "llama\u00e9 3", "cc-by-nc-sa-4.0\n", "GPL v 3", "1.0.0"]


def test_spark_folding_equals_python_folding(spark, real_spellings):
    spellings = sorted(real_spellings) + [s for s, _ in VARIANTS + HUB_FULL_NAMES] + ODD_SPELLINGS
    df = spark.createDataFrame([(s,) for s in spellings], "raw string")
    rows = df.select("raw", license_key_expr("raw").alias("key"),
                     license_id_expr(F.col("raw")).alias("license")).collect()
    assert len(rows) == len(spellings)
    for row in rows:
        expected_key = None if row.raw is None else fold_license_key(row.raw)
        assert (row.raw, row.key) == (row.raw, expected_key)
        assert (row.raw, row.license) == (row.raw, normalize_license(row.raw))


def test_spark_join_against_alias_table(spark, real_spellings):
    """The documented join recipe: broadcast aliases, unmatched non-blank values are `unknown`."""
    spellings = sorted(real_spellings) + ["no such licence", None, "  "]
    df = spark.createDataFrame([(s,) for s in spellings], "raw string")
    aliases = spark.createDataFrame(license_alias_items(), "license_key string, license_id string")
    joined = (df.withColumn("_key", license_key_expr("raw"))
              .join(F.broadcast(aliases), F.col("_key") == aliases.license_key, "left")
              .select("raw", F.when(license_id_expr("raw").isNull(), None)
                      .otherwise(F.coalesce("license_id", F.lit("unknown"))).alias("license")))
    assert {r.raw: r.license for r in joined.collect()} == {s: normalize_license(s) for s in spellings}


# --- compatibility rules -------------------------------------------------------------

@pytest.fixture(scope="module")
def rules() -> LicenseRules:
    return load_license_rules(DEFAULT_RULES_FILE)


RULE_CASES = [
    # (parent, child, verdict, rule)
    # missing, other, unknown: never a conflict
    (None, "mit", "unknown", "parent-licence-missing"),
    ("mit", None, "unknown", "child-licence-missing"),
    (None, None, "unknown", "parent-licence-missing"),
    ("cc-by-nc-4.0", None, "unknown", "child-licence-missing"),
    ("other", "mit", "unknown", "parent-licence-unclassified"),
    ("unknown", "llama3.1", "unknown", "parent-licence-unclassified"),
    ("cc", "mit", "unknown", "parent-licence-unclassified"),
    ("c-uda", "c-uda", "unknown", "parent-licence-unclassified"),
    ("llama3.1", "other", "unknown", "child-licence-unclassified"),
    ("cc-by-nd-4.0", "unknown", "unknown", "child-licence-unclassified"),
    ("gpl-3.0", "other", "unknown", "child-licence-unclassified"),
    ("mit", "unknown", "unknown", "child-licence-unclassified"),
    # no derivatives: any child is a conflict, the same licence too
    ("cc-by-nd-4.0", "cc-by-nd-4.0", "conflict", "no-derivatives-parent"),
    ("cc-by-nd-4.0", "mit", "conflict", "no-derivatives-parent"),
    ("cc-by-nc-nd-4.0", "cc-by-nc-4.0", "conflict", "no-derivatives-parent"),
    # permissive and public domain: anything goes
    ("mit", "apache-2.0", "ok", "permissive-parent"),
    ("apache-2.0", "cc-by-nc-4.0", "ok", "permissive-parent"),
    ("apache-2.0", "llama3.1", "ok", "permissive-parent"),
    ("bsd-3-clause", "gpl-3.0", "ok", "permissive-parent"),
    ("cc-by-4.0", "cc-by-nd-4.0", "ok", "permissive-parent"),
    ("cc0-1.0", "gpl-3.0", "ok", "permissive-parent"),
    ("unlicense", "mit", "ok", "permissive-parent"),
    ("mit", "cc0-1.0", "ok", "permissive-parent"),
    # share-alike
    ("cc-by-sa-4.0", "cc-by-sa-4.0", "ok", "same-licence"),
    ("cc-by-sa-3.0", "cc-by-sa-4.0", "ok", "share-alike-later-version"),
    ("cc-by-sa-4.0", "cc-by-sa-3.0", "conflict", "share-alike-parent"),
    ("cc-by-sa-4.0", "gpl-3.0", "ok", "cc-by-sa-4.0-to-gpl-3.0"),
    ("cc-by-sa-3.0", "gpl-3.0", "conflict", "share-alike-parent"),
    ("cc-by-sa-4.0", "mit", "conflict", "share-alike-parent"),
    ("cc-by-sa-4.0", "cc-by-nc-sa-4.0", "conflict", "share-alike-parent"),
    ("odbl", "cc-by-sa-4.0", "conflict", "share-alike-parent"),
    # non-commercial
    ("cc-by-nc-4.0", "cc-by-nc-4.0", "ok", "same-licence"),
    ("cc-by-nc-3.0", "cc-by-nc-4.0", "ok", "non-commercial-child"),
    ("cc-by-nc-4.0", "cc-by-nc-sa-4.0", "ok", "non-commercial-child"),
    ("cc-by-nc-4.0", "cc-by-nc-nd-4.0", "ok", "non-commercial-child"),
    ("cc-by-nc-4.0", "mit", "conflict", "non-commercial-parent"),
    ("cc-by-nc-4.0", "apache-2.0", "conflict", "non-commercial-parent"),
    ("cc-by-nc-4.0", "cc-by-nd-4.0", "conflict", "non-commercial-parent"),
    ("cc-by-nc-4.0", "llama2", "conflict", "non-commercial-parent"),
    ("cc-by-nc-4.0", "cc0-1.0", "conflict", "non-commercial-parent"),
    ("cc-by-nc-sa-3.0", "cc-by-nc-sa-4.0", "ok", "non-commercial-share-alike-later-version"),
    ("cc-by-nc-sa-4.0", "cc-by-nc-4.0", "conflict", "non-commercial-share-alike-parent"),
    ("cc-by-nc-sa-4.0", "mit", "conflict", "non-commercial-share-alike-parent"),
    # copyleft
    ("gpl-3.0", "gpl-3.0", "ok", "same-licence"),
    ("agpl-3.0", "agpl-3.0", "ok", "same-licence"),
    ("gpl-3.0", "mit", "conflict", "copyleft-parent"),
    ("gpl-3.0", "gpl-2.0", "conflict", "copyleft-parent"),
    ("agpl-3.0", "gpl-3.0", "conflict", "copyleft-parent"),
    ("gpl-2.0", "gpl-3.0", "unknown", "gpl-2.0-to-gpl-3.0"),
    ("gpl", "gpl-3.0", "unknown", "gpl-unversioned-parent"),
    ("gpl-3.0", "gpl", "unknown", "gpl-unversioned-child"),
    # weak copyleft
    ("lgpl-3.0", "lgpl-3.0", "ok", "same-licence"),
    ("lgpl-2.1", "gpl-3.0", "ok", "lgpl-to-gpl"),
    ("mpl-2.0", "gpl-3.0", "ok", "mpl-2.0-secondary-licence"),
    ("mpl-2.0", "mit", "unknown", "weak-copyleft-parent"),
    ("lgpl-3.0", "apache-2.0", "unknown", "weak-copyleft-parent"),
    # model-specific
    ("llama3.1", "llama3.1", "ok", "same-licence"),
    ("llama3.1", "mit", "conflict", "model-specific-parent"),
    ("llama3.1", "apache-2.0", "conflict", "model-specific-parent"),
    ("llama3.1", "unlicense", "conflict", "model-specific-parent"),
    ("llama2", "cc-by-nc-4.0", "conflict", "model-specific-parent"),
    ("llama3", "llama3.1", "unknown", "llama-version-change"),
    ("llama3.3", "llama2", "unknown", "llama-version-change"),
    ("gemma", "gemma", "ok", "same-licence"),
    ("gemma", "apache-2.0", "conflict", "model-specific-parent"),
    ("gemma", "llama3", "conflict", "model-specific-parent"),
    ("creativeml-openrail-m", "openrail++", "ok", "openrail-family"),
    ("bigscience-bloom-rail-1.0", "bigscience-openrail-m", "ok", "openrail-family"),
    ("openrail", "mit", "conflict", "model-specific-parent"),
    ("deepfloyd-if-license", "cc-by-nc-4.0", "conflict", "model-specific-parent"),
    # raw spellings are normalised first
    ("Apache License 2.0", "Llama-3.1", "ok", "permissive-parent"),
    ("Llama 3.1", "MIT License", "conflict", "model-specific-parent"),
    ("CC BY-NC 4.0", "  ", "unknown", "child-licence-missing"),
]


@pytest.mark.parametrize("parent, child, verdict, rule", RULE_CASES)
def test_rule_table(rules, parent, child, verdict, rule):
    result = rules.check(parent, child)
    assert (result.verdict, result.rule) == (verdict, rule)
    assert result.reason


def test_rule_table_covers_every_family_and_verdict():
    parent_families = {license_family(p) for p, _c, _v, _r in RULE_CASES if p is not None}
    child_families = {license_family(c) for _p, c, _v, _r in RULE_CASES if c is not None}
    assert parent_families == set(FAMILIES)
    assert child_families == set(FAMILIES)
    assert {v for _p, _c, v, _r in RULE_CASES} == set(VERDICTS)


def test_every_shipped_rule_fires_somewhere(rules):
    fired = {rules.check(p, c).rule for p, c, _v, _r in RULE_CASES}
    assert fired | {"default"} == {r.name for r in rules.rules}


def test_unclassified_or_missing_is_never_a_conflict(rules):
    ids = [*LICENSES, None]
    for parent in ids:
        for child in ids:
            sides = (license_family(parent), license_family(child))
            if {"other", "unknown"} & set(sides):
                assert rules.check(parent, child).verdict == "unknown", (parent, child)


def test_permissive_parent_allows_every_classified_child(rules):
    for parent in [i for i in LICENSES if license_family(i) in ("permissive", "public-domain")]:
        for child in LICENSES:
            if license_family(child) not in ("other", "unknown"):
                assert rules.check(parent, child).verdict == "ok", (parent, child)


def test_verdict_rows_cover_every_pair_with_values_as_given(rules):
    ids = ["mit", "cc-by-nc-4.0", None, "llama3.1", "mit"]
    rows = rules.verdict_rows(ids)
    assert len(rows) == 4 * 4
    assert {(p, c) for p, c, *_ in rows} == {(p, c) for p in ids for c in ids}
    by_pair = {(p, c): (v, r) for p, c, v, r, _reason in rows}
    assert by_pair[("cc-by-nc-4.0", "mit")] == ("conflict", "non-commercial-parent")
    assert by_pair[("llama3.1", "mit")] == ("conflict", "model-specific-parent")
    assert by_pair[(None, "mit")] == ("unknown", "parent-licence-missing")
    # Raw spellings come back as given so they join back to their column.
    assert rules.verdict_rows(["Apache 2.0"]) == [
        ("Apache 2.0", "Apache 2.0", "ok", "permissive-parent",
         rules.check("mit", "mit").reason)]


def test_verdict_rows_broadcast_join(spark, rules):
    edges = spark.createDataFrame(
        [("a", "p", "mit", "llama3.1"), ("b", "p", "llama3.1", "llama3.1"),
         ("c", "q", "mit", "cc-by-nc-4.0"), ("d", "r", None, "mit")],
        "child string, parent string, child_license string, parent_license string")
    ids = sorted({"mit", "llama3.1", "cc-by-nc-4.0", None}, key=lambda v: (v is None, v or ""))
    verdicts = spark.createDataFrame(
        rules.verdict_rows(ids), "v_parent string, v_child string, verdict string, rule string, reason string")
    joined = edges.join(F.broadcast(verdicts),
                        F.col("parent_license").eqNullSafe(F.col("v_parent"))
                        & F.col("child_license").eqNullSafe(F.col("v_child")), "left")
    assert {r.child: r.verdict for r in joined.collect()} == {
        "a": "conflict", "b": "ok", "c": "conflict", "d": "unknown"}


# --- malformed rules ------------------------------------------------------------------

def _valid() -> dict:
    return {"rules": [
        {"name": "nc", "parent": {"families": ["non-commercial"]},
         "child": {"families": ["non-commercial"]}, "verdict": "ok", "reason": "stays NC"},
        {"name": "default", "verdict": "unknown", "reason": "anything else"},
    ]}


def _mutated(path: tuple, value) -> dict:
    data = _valid()
    target = data
    for key in path[:-1]:
        target = target[key]
    if value is _DELETE:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return data


_DELETE = object()

MALFORMED = [
    # (where, new value, words the message must contain)
    (("rules", 0, "parent", "families"), ["permisive"], ["'nc'", "unknown family 'permisive'"]),
    (("rules", 0, "reason"), _DELETE, ["'nc'", "missing 'reason'"]),
    (("rules", 0, "reason"), "  ", ["'nc'", "missing 'reason'"]),
    (("rules", 0, "verdict"), "maybe", ["'nc'", "verdict 'maybe'"]),
    (("rules", 0, "verdict"), _DELETE, ["'nc'", "verdict None"]),
    (("rules", 0, "child", "ids"), ["Apache-2.0"], ["'nc'", "did you mean 'apache-2.0'"]),
    (("rules", 0, "child", "ids"), ["qwen"], ["'nc'", "'qwen' is not a licence id"]),
    (("rules", 0, "child", "ids"), [1, 2], ["'nc'", "list of strings"]),
    (("rules", 0, "verdcit"), "ok", ["'nc'", "unknown key(s) ['verdcit']"]),
    (("rules", 0, "parent", "same_as_parent"), True, ["'nc'", "unknown key(s) ['same_as_parent']"]),
    (("rules", 0, "child", "missing"), "yes", ["'nc'", "'missing' must be true or false"]),
    (("rules", 0, "child"), {}, ["'nc'", "non-empty mapping"]),
    (("rules", 0, "child"), {"missing": False}, ["'nc'", "matches nothing"]),
    (("rules", 0, "name"), _DELETE, ["rule #1", "missing 'name'"]),
    (("rules", 1, "name"), "nc", ["'nc'", "used twice"]),
    (("rules", 1, "parent"), {"ids": ["mit"]}, ["'default'", "must be the default"]),
    (("rules", 0), "not a rule", ["rule #1", "not a mapping"]),
    (("rules",), [], ["non-empty list"]),
    (("rule",), [], ["one key, 'rules'"]),
]


@pytest.mark.parametrize("path, value, words", MALFORMED)
def test_malformed_rules_name_the_rule(path, value, words):
    with pytest.raises(ValueError) as info:
        LicenseRules.from_dict(_mutated(path, value), source="test.yaml")
    assert isinstance(info.value, LicenseRulesError)
    for word in ["test.yaml", *words]:
        assert word in str(info.value)


def test_unconditional_rule_before_the_end_is_refused():
    data = _valid()
    data["rules"].insert(0, {"name": "catch-all", "verdict": "ok", "reason": "everything"})
    with pytest.raises(LicenseRulesError, match="'catch-all' matches every pair"):
        LicenseRules.from_dict(data)


def test_load_reports_the_file(tmp_path):
    good = tmp_path / "good.yaml"
    good.write_text(yaml.safe_dump(_valid()), encoding="utf-8")
    rules = load_license_rules(good)
    assert rules.check("cc-by-nc-4.0", "cc-by-nc-sa-4.0").rule == "nc"
    assert rules.check("mit", "mit").rule == "default"

    bad = tmp_path / "bad.yaml"
    bad.write_text("rules: [\n  {name: x", encoding="utf-8")
    with pytest.raises(LicenseRulesError, match="bad.yaml: not valid YAML"):
        load_license_rules(bad)
    with pytest.raises(FileNotFoundError):
        load_license_rules(tmp_path / "missing.yaml")


def test_shipped_rules_file_is_the_configured_one(settings):
    assert settings.conf_file(settings.lineage.licenses_file).resolve() == DEFAULT_RULES_FILE.resolve()
