"""A corpus of malformed snapshot records, config.json texts and files, counted (issue 14 §5).

Every kind is written into one snapshot folder among good records, then ingested and
flattened once. Per kind the test knows what must happen: the model is kept with the bad
value dropped or repaired (a field-level reject), the record is rejected, or the file is
refused, each with its reason. What is counted: kinds tried, crashes (must be 0), good
records lost or changed (must be 0), kinds whose outcome differs from the expected one
(must be 0).
"""

from __future__ import annotations

import gzip
import json
from itertools import zip_longest

import pyarrow as pa
import pyarrow.parquet as pq

from semfin_spark.delta import DeltaStore
from semfin_spark.flatten import flatten
from semfin_spark.ingest import ingest
from semfin_spark.schemas import CONFIG_FEATURES, FLATTEN_REJECTS, HUB_MODELS, INGEST_REJECTS

# kind -> (record line as bytes, expected): expected is ("reject", reason) for a record
# that cannot be a model, ("kept", reason) for a model kept with a field-level reject,
# ("kept", None) for a model kept as is.
RECORDS: dict[str, tuple[bytes, tuple[str, str | None]]] = {
    "truncated_json": (b'{"id": "bad/truncated", "tags": ["a", ', ("reject", "invalid_json")),
    "trailing_garbage": (b'{"id": "bad/garbage"} xyz', ("reject", "invalid_json")),
    "single_quotes": (b"{'id': 'bad/quotes'}", ("reject", "invalid_json")),
    "raw_nul_byte": (b'{"id": "bad/nul", "author": "a\x00b"}', ("reject", "invalid_json")),
    "nan_value": (b'{"id": "bad/nan", "likes": NaN}', ("reject", "invalid_json")),
    "infinity_value": (b'{"id": "bad/inf", "downloads": -Infinity}', ("reject", "invalid_json")),
    "depth_10000": (b'{"id": "bad/deep", "config": ' + b"[" * 10_000 + b"]" * 10_000 + b"}",
                    ("reject", "invalid_json")),
    "huge_line": (b'{"id": "bad/huge", "x": "' + b"y" * 100_000 + b'"}', ("reject", "too_large")),
    "top_level_list": (b'[{"id": "bad/list"}]', ("reject", "not_an_object")),
    "top_level_string": (b'"bad/string"', ("reject", "not_an_object")),
    "top_level_null": (b"null", ("reject", "not_an_object")),
    "top_level_number": (b"42", ("reject", "not_an_object")),
    "no_id": (b'{"author": "nobody"}', ("reject", "missing_id")),
    "empty_id": (b'{"id": ""}', ("reject", "missing_id")),
    "numeric_id": (b'{"id": 12345}', ("reject", "invalid_id")),
    "id_with_space": (b'{"id": "bad/with space"}', ("reject", "invalid_id")),
    "id_traversal": (b'{"id": "../etc"}', ("reject", "invalid_id")),
    "id_three_parts": (b'{"id": "a/b/c"}', ("reject", "invalid_id")),
    "id_control_char": (b'{"id": "bad/ctl\\u0007"}', ("reject", "invalid_id")),
    "id_absurdly_long": (b'{"id": "bad/' + b"n" * 2_000 + b'"}', ("reject", "invalid_id")),
    "id_not_utf8": (b'{"id": "bad/\xff\xfe"}', ("reject", "invalid_id")),
    "author_list": (b'{"id": "bad/author", "author": ["a"]}', ("reject", "wrong_type")),
    "sha_object": (b'{"id": "bad/sha", "sha": {"x": 1}}', ("reject", "wrong_type")),
    "private_text": (b'{"id": "bad/private", "private": "yes"}', ("reject", "wrong_type")),
    "gated_number": (b'{"id": "bad/gated", "gated": 3}', ("reject", "wrong_type")),
    "downloads_text": (b'{"id": "bad/downloads", "downloads": "many"}', ("reject", "wrong_type")),
    "downloads_fraction": (b'{"id": "bad/fraction", "downloads": 1.5}', ("reject", "wrong_type")),
    "likes_past_64_bits": (b'{"id": "bad/likes", "likes": 123456789012345678901234567890}',
                           ("reject", "wrong_type")),
    "library_number": (b'{"id": "bad/library", "library_name": 5}', ("reject", "wrong_type")),
    "pipeline_object": (b'{"id": "bad/pipeline", "pipeline_tag": {}}', ("reject", "wrong_type")),
    "tags_text": (b'{"id": "bad/tags", "tags": "a,b"}', ("reject", "wrong_type")),
    "tags_numbers": (b'{"id": "bad/tagnum", "tags": ["a", 1]}', ("reject", "wrong_type")),
    "siblings_object": (b'{"id": "bad/siblings", "siblings": {"a": 1}}', ("reject", "wrong_type")),
    "sibling_without_name": (b'{"id": "bad/sibling", "siblings": [{"size": 1}]}',
                             ("reject", "wrong_type")),
    "config_number": (b'{"id": "bad/config", "config": 7}', ("reject", "wrong_type")),
    "config_text_not_json": (b'{"id": "bad/configtext", "config": "{not json"}',
                             ("reject", "wrong_type")),
    "time_not_a_time": (b'{"id": "bad/time", "lastModified": "yesterday"}', ("reject", "wrong_type")),
    "time_boolean": (b'{"id": "bad/timebool", "createdAt": true}', ("reject", "wrong_type")),
    # Kept, with a field-level reject saying what was dropped or repaired.
    "value_not_utf8": (b'{"id": "keep/latin1", "author": "caf\xe9"}', ("kept", "invalid_utf8")),
    "lone_surrogate": (b'{"id": "keep/surrogate", "author": "\\ud800"}', ("kept", "invalid_unicode")),
    "number_1e400": (b'{"id": "keep/1e400", "config": {"rope_theta": 1e400}}',
                     ("kept", "number_out_of_range")),
    "time_1e18": (b'{"id": "keep/millis", "lastModified": 1e18}', ("kept", "time_out_of_range")),
    "time_minus_1e300": (b'{"id": "keep/negative", "lastModified": -1e300}',
                         ("kept", "time_out_of_range")),
    "time_year_one_east": (b'{"id": "keep/yearone", "lastModified": "0001-01-01T00:00:00+14:00"}',
                           ("kept", "time_out_of_range")),
    "card_bad_yaml": (b'{"id": "keep/yaml", "cardData": "---\\nlicense: [mit\\n---"}',
                      ("kept", "invalid_card_data")),
    "card_python_tag": (b'{"id": "keep/pytag", "cardData": "license: !!python/object/apply:os.system [\\"true\\"]"}',
                        ("kept", "invalid_card_data")),
    "card_list": (b'{"id": "keep/cardlist", "cardData": [1, 2]}', ("kept", "invalid_card_data")),
    "crawler_fetch_error": (b'{"id": "keep/fetch", "_fetch_error": "config.json: HTTP 500 after 5 retries"}',
                            ("kept", "fetch_error")),
    # Kept as they are: odd but valid.
    "byte_order_mark": (b'\xef\xbb\xbf{"id": "keep/bom"}', ("kept", None)),
    "crlf_line_end": (b'{"id": "keep/crlf"}\r', ("kept", None)),
    "escaped_nul_in_value": (b'{"id": "keep/escnul", "author": "a\\u0000b"}', ("kept", None)),
    "legacy_long_id": (b'{"id": "keep/' + b"n" * 250 + b'"}', ("kept", None)),
}

# config.json texts (in config_json) -> the flatten reject reason.
CONFIGS: dict[str, tuple[str, str]] = {
    "config_truncated": ('{"model_type": "bert", "hidden', "invalid_json"),
    "config_top_level_list": ("[1, 2, 3]", "not_an_object"),
    "config_nan": ('{"a": NaN, "model_type": "bert"}', "non_finite_number"),
    "config_1e400": ('{"rope_theta": 1e400}', "non_finite_number"),
    "config_duplicate_keys": ('{"model_type": "bert", "model_type": "gpt2"}', "duplicate_key"),
    "config_depth_10000": ('{"a": ' + "[" * 10_000 + "]" * 10_000 + "}", "too_deep"),
    "config_binary": ('{"a": 1}\x00\x00\x00', "binary"),
    "config_replacement_chars": ('{"a": "caf\ufffd"}', "invalid_utf8"),
    "config_long_list": ('{"a": ' + json.dumps(list(range(5000))) + "}", "list_too_long"),
    "config_key_collision": ('{"a.b": 1, "a": {"b": 2}}', "key_collision"),
}


def good_records(n: int) -> list[dict]:
    return [{"id": f"good/m{i}", "sha": f"{i:040x}", "lastModified": "2024-03-01T00:00:00Z",
             "author": "good", "tags": ["pytorch", "license:mit"], "pipeline_tag": "fill-mask",
             "siblings": [{"rfilename": "config.json"}],
             "config_json": json.dumps({"model_type": "bert", "hidden_size": 64 + i})}
            for i in range(n)]


def write_corpus(folder) -> dict[str, tuple[str, str]]:
    """The corpus as snapshot files; returns the file kinds -> (file name, reason)."""
    folder.mkdir()
    good = [json.dumps(r).encode() for r in good_records(40)]
    bad = [line for line, _ in RECORDS.values()]
    configs = [json.dumps({"id": f"cfg/{kind}", "config_json": text}).encode()
               for kind, (text, _) in CONFIGS.items()]
    lines = [x for pair in zip_longest(good, bad + configs) for x in pair if x is not None]
    (folder / "mixed.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    with gzip.open(folder / "more-good.jsonl.gz", "wb") as fh:
        fh.write(b"\n".join(good[:5]) + b"\n")  # duplicates of good records: counted once
    whole = gzip.compress(b"\n".join(good) * 50)
    (folder / "truncated.jsonl.gz").write_bytes(whole[: len(whole) // 2])
    (folder / "plain-text.jsonl.gz").write_text('{"id": "bad/notgzip"}\n')
    (folder / "empty.jsonl").write_bytes(b"")
    (folder / "empty.jsonl.gz").write_bytes(gzip.compress(b""))
    pq.write_table(pa.table({"x": [1, 2]}), folder / "foreign-schema.parquet")
    (folder / "broken.parquet").write_bytes(b"PAR1 this is not parquet")
    return {"gzip_truncated_mid_stream": ("truncated.jsonl.gz", "unreadable_file"),
            "text_named_gz": ("plain-text.jsonl.gz", "unreadable_file"),
            "parquet_wrong_schema": ("foreign-schema.parquet", "foreign_schema"),
            "parquet_broken_footer": ("broken.parquet", "unreadable_file"),
            "empty_file": ("empty.jsonl", None), "empty_gzip": ("empty.jsonl.gz", None)}


def test_the_malformed_corpus_crashes_nothing_and_loses_no_good_row(spark, settings, tmp_path):
    import dataclasses

    settings = settings.replace(ingest=dataclasses.replace(settings.ingest, max_record_bytes=50_000))
    store = DeltaStore.from_settings(spark, settings)
    files = write_corpus(tmp_path / "snapshot")
    kinds = len(RECORDS) + len(CONFIGS) + len(files) + 1  # + a directory of mixed files

    result = ingest(spark, store, f"snapshot:{tmp_path / 'snapshot'}", settings,
                    progress=lambda _: None)
    flatten(spark, store, settings, progress=lambda _: None)

    models = {r["id"]: r for r in store.read(HUB_MODELS).collect()}
    ingest_rejects = store.read(INGEST_REJECTS).collect()
    by_model = {}
    for r in ingest_rejects:
        by_model.setdefault(r["model_id"], set()).add(r["reason"])
    raw_rejects = {(r["raw"] or "")[:60]: r["reason"] for r in ingest_rejects}
    flatten_reasons = {}
    for r in store.read(FLATTEN_REJECTS).collect():
        flatten_reasons.setdefault(r["model_id"], set()).add(r["reason"])

    good = good_records(40)
    lost = [g["id"] for g in good if g["id"] not in models
            or models[g["id"]]["config_json"] != g["config_json"]
            or models[g["id"]]["tags"] != g["tags"]]
    features = {(r["model_id"], r["value"]) for r in store.read(CONFIG_FEATURES)
                .where("key_path = 'hidden_size'").collect()}
    lost += [g["id"] for i, g in enumerate(good) if (g["id"], str(64 + i)) not in features]

    wrong: list[str] = []
    for kind, (line, (outcome, reason)) in RECORDS.items():
        text = line.decode("utf-8", "replace").lstrip("\ufeff")
        model_id = json.loads(text)["id"] if outcome == "kept" else None
        if outcome == "kept":
            if model_id not in models or (reason is not None and reason not in by_model.get(model_id, ())):
                wrong.append(f"{kind}: kept={model_id in models}, {by_model.get(model_id)}")
        elif raw_rejects.get(text[:60]) != reason:
            wrong.append(f"{kind}: {raw_rejects.get(text[:60])}")
    for kind, (_, reason) in CONFIGS.items():
        if f"cfg/{kind}" not in models or reason not in flatten_reasons.get(f"cfg/{kind}", ()):
            wrong.append(f"{kind}: kept={f'cfg/{kind}' in models}, {flatten_reasons.get(f'cfg/{kind}')}")
    refused = {r["source_file"].rsplit("/", 1)[-1]: r["reason"] for r in ingest_rejects
               if r["model_id"] is None and r["reason"] in ("unreadable_file", "foreign_schema")}
    for kind, (name, reason) in files.items():
        if refused.get(name) != reason:
            wrong.append(f"{kind}: {refused.get(name)}")

    print(f"\nhostile corpus: {kinds} kinds tried, 0 crashes, {len(lost)} good rows lost, "
          f"{len(wrong)} kinds with an unexpected outcome")
    assert kinds >= 50
    assert lost == []
    assert wrong == []
    assert result.files_rejected == 4
    assert result.rejected == sum(1 for _, (o, _) in RECORDS.values() if o == "reject")
