"""Settings: defaults, override file, environment, flags, in that order; clear errors."""

from __future__ import annotations

import os

import pytest

from semfin_spark.session import read_spark_defaults
from semfin_spark.settings import SettingsError, load_settings


def test_defaults_come_from_conf(tmp_path):
    s = load_settings(environ={})
    assert s.warehouse == os.path.abspath("./semfin-warehouse")
    assert s.train.fields == ("license", "reuse_method", "pipeline_tag", "library_name", "model_type")
    assert s.tracking_uri.startswith("sqlite:///") and s.tracking_uri.endswith("semfin-warehouse/mlflow.db")
    assert s.conf_file("licenses.yaml").parent == s.conf_file("semfin.yaml").parent


def test_file_then_environment_then_flags(tmp_path):
    conf = tmp_path / "site.yaml"
    conf.write_text("warehouse: /from/file\nflatten:\n  max_depth: 7\n  max_keys: 99\n")
    env = {"SEMFIN_WAREHOUSE": "/from/env", "SEMFIN_FLATTEN__MAX_KEYS": "55",
           "MLFLOW_TRACKING_URI": "http://mlflow:5000"}
    s = load_settings(conf, environ=env, overrides={"flatten.max_depth": 3, "warehouse": None})
    assert s.warehouse == "/from/env"
    assert (s.flatten.max_depth, s.flatten.max_keys) == (3, 55)
    assert s.tracking_uri == "http://mlflow:5000"
    assert load_settings(conf, environ=env, overrides={"warehouse": "/flag"}).warehouse == "/flag"


def test_a_remote_warehouse_needs_a_tracking_uri():
    remote = load_settings(environ={"SEMFIN_WAREHOUSE": "s3a://bucket/semfin"})
    with pytest.raises(SettingsError, match="MLFLOW_TRACKING_URI"):
        remote.tracking_uri
    assert load_settings(environ={"SEMFIN_WAREHOUSE": "s3a://bucket/semfin",
                                  "MLFLOW_TRACKING_URI": "http://mlflow:5000"}).tracking_uri \
        == "http://mlflow:5000"
    assert load_settings(environ={"SEMFIN_WAREHOUSE": "file:///data/wh"}).tracking_uri \
        == "sqlite:////data/wh/mlflow.db"


def test_token_never_in_repr():
    s = load_settings(environ={"HF_TOKEN": "hf_secret_value", "HF_ENDPOINT": "http://127.0.0.1:1"})
    assert s.hub.token == "hf_secret_value"
    assert "hf_secret_value" not in repr(s) and "hf_secret_value" not in str(s)


@pytest.mark.parametrize("text, message", [
    ("flatten:\n  max_depht: 3\n", "unknown setting.*flatten.max_depht"),
    ("flatten:\n  max_depth: deep\n", "flatten.max_depth must be a number"),
    ("- a list\n", "must hold a mapping"),
    ("flatten: [unclosed\n", "not valid YAML"),
])
def test_bad_configuration_is_a_clear_error(tmp_path, text, message):
    conf = tmp_path / "bad.yaml"
    conf.write_text(text)
    with pytest.raises(SettingsError, match=message):
        load_settings(conf, environ={})


def test_missing_conf_file_is_a_clear_error(tmp_path):
    with pytest.raises(SettingsError, match="not found"):
        load_settings(tmp_path / "nope.yaml", environ={})


def test_spark_defaults_file_binds_to_loopback():
    s = load_settings(environ={})
    defaults = read_spark_defaults(s.conf_file(s.spark.defaults_file))
    assert defaults["spark.driver.bindAddress"] == "127.0.0.1"
    assert defaults["spark.sql.parquet.outputTimestampType"] == "TIMESTAMP_MICROS"


@pytest.mark.parametrize("block", ["tables", "leakage"])
def test_readme_generated_blocks_match_the_code(block):
    """The table reference (schemas.py) and the leakage rules (features.py) in the README."""
    import re
    from pathlib import Path

    from semfin_spark.features import leakage_table
    from semfin_spark.schemas import markdown_reference

    expected = {"tables": markdown_reference, "leakage": leakage_table}[block]()
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
    section = re.search(rf"<!-- {block}:begin -->\n(.*)\n<!-- {block}:end -->", readme, re.S)
    assert section, f"README lost its {block} section"
    assert section.group(1) == expected, \
        f"README {block} block is stale: run scripts/update_readme_tables.py"


@pytest.mark.parametrize("environ, message", [
    ({"SEMFIN_FLATTEN__MAX_DEPTH": "[unclosed"}, "SEMFIN_FLATTEN__MAX_DEPTH is not valid YAML"),
    ({"SEMFIN_FLATTEN__MAX_DEPTH": "-5"}, "flatten.max_depth must be positive"),
    ({"SEMFIN_INGEST__HUB_WORKERS": "0"}, "ingest.hub_workers must be positive"),
    ({"SEMFIN_FLATTEN__MAX_KEYS": "2.5"}, "flatten.max_keys must be a whole number"),
    ({"SEMFIN_EVALUATE__TEST_FRACTION": "1.5"}, "evaluate.test_fraction must be below 1"),
    ({"SEMFIN_DELTA__VACUUM_RETENTION_HOURS": "-1"}, "must be at least 0"),
    ({"SEMFIN_INGEST__HUB_BACKOFF_SECONDS": "-0.5"}, "ingest.hub_backoff_seconds must be at least 0"),
    ({"SEMFIN_INGEST__HUB_BACKOFF_MAX_SECONDS": "0"}, "ingest.hub_backoff_max_seconds must be positive"),
])
def test_bad_overrides_are_settings_errors(environ, message):
    with pytest.raises(SettingsError, match=message):
        load_settings(environ=environ)


def test_zero_where_zero_means_something():
    s = load_settings(environ={"SEMFIN_EVALUATE__SEED": "0", "SEMFIN_DELTA__VACUUM_RETENTION_HOURS": "0",
                               "SEMFIN_INGEST__HUB_BACKOFF_SECONDS": "0"})
    assert (s.evaluate.seed, s.delta.vacuum_retention_hours, s.ingest.hub_backoff_seconds) == (0, 0.0, 0.0)


def test_relative_warehouse_is_made_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert load_settings(environ={"SEMFIN_WAREHOUSE": "wh"}).warehouse == str(tmp_path / "wh")
    assert load_settings(environ={"SEMFIN_WAREHOUSE": "s3a://b/wh"}).warehouse == "s3a://b/wh"


def test_max_training_models_is_per_field_whole_and_at_least_zero():
    settings = load_settings(environ={}, overrides={"train.max_training_models": {"license": 1000}})
    assert settings.train.max_training_models["license"] == 1000
    assert settings.train.max_training_models["pipeline_tag"] == 50_000  # the others kept
    for bad, message in (({"license": -1}, "at least 0"), ({"license": 2.5}, "whole number"),
                         ({"licence": 10}, "unknown key")):
        with pytest.raises(SettingsError, match=message):
            load_settings(environ={}, overrides={"train.max_training_models": bad})
