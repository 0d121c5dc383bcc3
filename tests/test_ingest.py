"""Ingest: real snapshots, re-ingest, changed models, rejects, other spellings and formats."""

from __future__ import annotations

import gzip
import json

import pytest
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from pyspark.sql import types as T

from semfin_spark.delta import DeltaStore
from semfin_spark.ingest import IngestError, ingest, parse_record
from semfin_spark.schemas import HUB_MODELS, INGEST_REJECTS
from semfin_spark.settings import IngestSettings


def quiet(_line: str) -> None:
    pass


def real_lines(path) -> list[str]:
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        return [line for line in fh if line.strip()]


def write_jsonl(path, lines) -> str:
    path.write_text("".join(l if l.endswith("\n") else l + "\n" for l in lines), encoding="utf-8")
    return str(path)


@pytest.fixture
def store(spark, settings):
    return DeltaStore.from_settings(spark, settings)


@pytest.mark.parametrize("name", ["hub2022_dev.jsonl.gz", "hub2025_trees.jsonl.gz"])
def test_real_snapshot_one_row_per_id_with_types(spark, store, settings, shared_data, name):
    lines = real_lines(shared_data / name)
    ids = {json.loads(l)["id"] for l in lines}
    result = ingest(spark, store, f"snapshot:{shared_data / name}", settings, progress=quiet)
    table = store.read(HUB_MODELS)
    assert result.read == len(lines)
    assert result.rejected == 0
    assert result.written == len(ids)
    assert table.count() == len(ids) == table.select("id").distinct().count()
    assert dict(table.dtypes)["last_modified"] == "timestamp"
    assert dict(table.dtypes)["tags"] == "array<string>"
    # Values survive: spot-check every model's tags and pipeline tag against the file.
    expected = {r["id"]: (r.get("tags"), r.get("pipeline_tag")) for r in map(json.loads, lines)}
    got = {r["id"]: (r["tags"], r["pipeline_tag"]) for r in table.select("id", "tags", "pipeline_tag").collect()}
    assert got == expected


def test_reingest_changes_nothing_and_changed_models_update_exactly(spark, store, settings,
                                                                    shared_data, tmp_path):
    path = shared_data / "hub2025_trees.jsonl.gz"
    ingest(spark, store, f"snapshot:{path}", settings, progress=quiet)
    version = store.version(HUB_MODELS)
    before = {r["id"]: r for r in store.read(HUB_MODELS).collect()}

    again = ingest(spark, store, f"snapshot:{path}", settings, progress=quiet)
    assert (again.written, again.unchanged) == (0, len(before))
    assert store.version(HUB_MODELS) == version

    records = [json.loads(l) for l in real_lines(path)]
    changed = {records[i]["id"] for i in (3, 500, 1200)}
    for rec in records:
        if rec["id"] in changed:
            rec["sha"] = "f" * 40
            rec["lastModified"] = "2026-11-01T00:00:00.000Z"
    newer = write_jsonl(tmp_path / "newer.jsonl", [json.dumps(r) for r in records])
    result = ingest(spark, store, f"snapshot:{newer}", settings, progress=quiet)
    assert (result.written, result.unchanged) == (3, len(before) - 3)
    after = {r["id"]: r for r in store.read(HUB_MODELS).collect()}
    assert {i for i in after if after[i]["sha"] == "f" * 40} == changed
    untouched = [i for i in after if i not in changed]
    assert all(after[i]["ingested_at"] == before[i]["ingested_at"] for i in untouched)
    assert all(after[i]["record_hash"] == before[i]["record_hash"] for i in untouched)


BAD_LINES = {
    "not json {": "invalid_json",
    '{"id": "a/truncated", "tags": [': "invalid_json",
    "[1, 2, 3]": "not_an_object",
    '"just text"': "not_an_object",
    '{"author": "nobody"}': "missing_id",
    '{"id": "has space/in name"}': "invalid_id",
    '{"id": "a/b/c"}': "invalid_id",
    '{"id": 12345}': "invalid_id",
    '{"id": "ok/downloads", "downloads": "many"}': "wrong_type",
    '{"id": "ok/tags", "tags": "mit"}': "wrong_type",
    '{"id": "ok/time", "lastModified": "yesterday"}': "wrong_type",
    '{"id": "ok/nan", "downloads": NaN}': "invalid_json",
    "\x00\x01\x02binary\xff": "invalid_json",
}


def test_corrupted_snapshot_loses_no_good_record(spark, store, settings, shared_data, tmp_path):
    good = real_lines(shared_data / "hub2025_trees.jsonl.gz")[:300]
    mixed = []
    bad = list(BAD_LINES)
    for i, line in enumerate(good):
        mixed.append(line)
        if i % 25 == 0 and bad:
            mixed.append(bad.pop())
    mixed.extend(bad)
    path = write_jsonl(tmp_path / "corrupt.jsonl", mixed)
    result = ingest(spark, store, f"snapshot:{path}", settings, progress=quiet)
    assert result.rejected == len(BAD_LINES)
    assert store.read(HUB_MODELS).count() == len({json.loads(l)["id"] for l in good})
    rejects = {r["raw"]: r["reason"] for r in store.read(INGEST_REJECTS).collect()}
    for line, reason in BAD_LINES.items():
        assert rejects[line.strip()] == reason, line
    # Running again records no duplicate rejects.
    ingest(spark, store, f"snapshot:{path}", settings, progress=quiet)
    assert store.read(INGEST_REJECTS).count() == len(BAD_LINES)


def test_rejected_raw_text_is_truncated(spark, store, settings, tmp_path):
    huge_bad = '{"id": "x/y", "tags": "' + "z" * 10_000 + '"}'
    path = write_jsonl(tmp_path / "huge.jsonl", [huge_bad])
    ingest(spark, store, f"snapshot:{path}", settings, progress=quiet)
    row = store.read(INGEST_REJECTS).collect()[0]
    assert row["reason"] == "wrong_type" and row["model_id"] == "x/y"
    assert len(row["raw"]) == settings.ingest.reject_raw_max_chars
    assert row["raw_length"] == len(huge_bad)


def test_duplicates_keep_the_newest(spark, store, settings, tmp_path):
    lines = [
        json.dumps({"id": "o/m", "sha": "1" * 40, "lastModified": "2024-01-01T00:00:00.000Z"}),
        json.dumps({"id": "o/m", "sha": "2" * 40, "lastModified": "2025-01-01T00:00:00.000Z"}),
        json.dumps({"id": "o/m", "sha": "3" * 40, "lastModified": "2023-01-01T00:00:00.000Z"}),
    ]
    result = ingest(spark, store, f"snapshot:{write_jsonl(tmp_path / 'dup.jsonl', lines)}", settings,
                    progress=quiet)
    assert (result.written, result.duplicates) == (1, 2)
    assert store.read(HUB_MODELS).collect()[0]["sha"] == "2" * 40


def test_snake_case_yaml_card_and_config_json(spark, store, settings, tmp_path):
    card_yaml = "---\nlicense: mit\nbase_model: org/base\ntags:\n- lora\n---\n"
    config = {"model_type": "llama", "hidden_size": 4096}
    lines = [json.dumps({
        "id": "o/snake", "last_modified": "2025-03-04T05:06:07+00:00", "created_at": 1700000000000,
        "card_data": card_yaml, "transformers_info": {"auto_model": "AutoModel"},
        "siblings": ["config.json", {"rfilename": "model.safetensors"}],
        "config_json": json.dumps(config), "gated": "manual",
    }), json.dumps({"id": "o/evil", "card_data": "!!python/object/apply:os.system ['echo pwned']"})]
    ingest(spark, store, f"snapshot:{write_jsonl(tmp_path / 's.jsonl', lines)}", settings, progress=quiet)
    rows = {r["id"]: r for r in store.read(HUB_MODELS).collect()}
    snake = rows["o/snake"]
    assert json.loads(snake["card_data"]) == {"license": "mit", "base_model": "org/base", "tags": ["lora"]}
    assert json.loads(snake["config_json"]) == config
    assert "config_json" not in json.loads(snake["raw"])
    assert snake["siblings"] == ["config.json", "model.safetensors"]
    assert snake["last_modified"].isoformat().startswith("2025-03-04T05:06:07")
    assert snake["created_at"].year == 2023 and snake["gated"] == "manual"
    # An unsafe YAML tag is never constructed: the model is kept, its card dropped and recorded.
    assert rows["o/evil"]["card_data"] is None
    reasons = [r["reason"] for r in store.read(INGEST_REJECTS).where("model_id = 'o/evil'").collect()]
    assert reasons == ["invalid_card_data"]


def test_parquet_snapshot(spark, store, settings, shared_data, tmp_path):
    records = [json.loads(l) for l in real_lines(shared_data / "hub2025_trees.jsonl.gz")[:200]]
    schema = T.StructType([
        T.StructField("id", T.StringType()), T.StructField("author", T.StringType()),
        T.StructField("sha", T.StringType()), T.StructField("last_modified", T.TimestampType()),
        T.StructField("tags", T.ArrayType(T.StringType())), T.StructField("pipeline_tag", T.StringType()),
        T.StructField("downloads", T.LongType()),
    ])
    import datetime as dt
    rows = [(r["id"], r["author"], r["sha"],
             dt.datetime.fromisoformat(r["lastModified"]) if r.get("lastModified") else None,
             r.get("tags"), r.get("pipeline_tag"), r.get("downloads")) for r in records]
    spark.createDataFrame(rows, schema).write.parquet(str(tmp_path / "dump"))
    result = ingest(spark, store, f"snapshot:{tmp_path / 'dump'}", settings, progress=quiet)
    assert (result.written, result.rejected) == (200, 0)
    got = {r["id"]: r for r in store.read(HUB_MODELS).collect()}
    for rec in records:
        assert got[rec["id"]]["tags"] == rec.get("tags") and got[rec["id"]]["downloads"] == rec.get("downloads")


def test_missing_snapshot_is_a_clear_error(spark, store, settings, tmp_path):
    with pytest.raises(IngestError, match="does not exist"):
        ingest(spark, store, f"snapshot:{tmp_path / 'nope.jsonl'}", settings, progress=quiet)
    with pytest.raises(IngestError, match="unknown source"):
        ingest(spark, store, "ftp:somewhere", settings, progress=quiet)


def test_a_snapshot_named_by_a_file_uri_is_the_local_file(tmp_path):
    """``file:/x``, ``file:///x`` and ``/x`` name the same snapshot (``file:/x`` used to be
    taken for a relative path and refused as missing)."""
    from semfin_spark.ingest import snapshot_files

    (tmp_path / "hub.jsonl").write_text('{"id": "a/b"}\n', encoding="utf-8")
    expected = [str(tmp_path / "hub.jsonl")]
    for path in (str(tmp_path), f"file:{tmp_path}", f"file://{tmp_path}", f"file:{tmp_path}/hub.jsonl"):
        assert snapshot_files(path).json == expected, path
    with pytest.raises(IngestError, match="does not exist"):
        snapshot_files(f"file:{tmp_path}/nope.jsonl")


def test_parse_record_limits():
    small = IngestSettings(max_record_bytes=100)
    with pytest.raises(Exception, match="too_large"):
        parse_record('{"id": "a/b", "x": "' + "y" * 200 + '"}', small)
    assert parse_record('{"id": "a/b", "likes": 3.0}', IngestSettings())["likes"] == 3
    with pytest.raises(Exception, match="does not fit 64 bits"):
        parse_record('{"id": "a/b", "likes": 123456789012345678901234567890}', IngestSettings())


def test_hub_source_crawls_the_endpoint_and_ingests(spark, settings, shared_data, tmp_path):
    """`--source hub:N` drives huggingface_hub's session against a Hub on 127.0.0.1."""
    from hub_server import FakeHub

    records = [json.loads(l) for l in real_lines(shared_data / "hub2025_trees.jsonl.gz")[:40]]
    records[0]["siblings"] = (records[0].get("siblings") or []) + [{"rfilename": "config.json"}]
    records[1]["siblings"] = (records[1].get("siblings") or []) + [{"rfilename": "config.json"}]
    configs = {records[0]["id"]: json.dumps({"model_type": "llama", "hidden_size": 64}),
               records[1]["id"]: "{not json"}
    with FakeHub(records, configs) as hub:
        hub.add_fault(r"^/api/models$", status=429, times=1, headers={"Retry-After": "0"})
        hub_settings = settings.replace(hub=settings.hub.__class__(endpoint=hub.url, token="hf_test_secret"))
        store = DeltaStore.from_settings(spark, hub_settings)
        lines: list[str] = []
        result = ingest(spark, store, "hub:30", hub_settings, progress=lines.append)
        assert hub.requests[0].status == 429  # rate limited once, then retried
        assert all(r.headers.get("authorization") == "Bearer hf_test_secret" for r in hub.requests)
    assert (result.written, result.rejected) == (30, 0)
    rows = {r["id"]: r for r in store.read(HUB_MODELS).collect()}
    assert json.loads(rows[records[0]["id"]]["config_json"]) == {"model_type": "llama", "hidden_size": 64}
    assert rows[records[1]["id"]]["config_json"] == "{not json"  # kept verbatim; flatten rejects it
    assert not any("hf_test_secret" in line for line in lines)
    assert "hf_test_secret" not in "".join(str(r.asDict()) for r in store.read(HUB_MODELS).collect())
