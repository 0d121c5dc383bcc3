"""SQL over the warehouse: tables as views, queried as an analyst would."""

from __future__ import annotations

import json

from semfin_spark.delta import DeltaStore
from semfin_spark.ingest import ingest
from semfin_spark.sql import register_tables, run_query


def test_query_hub_models_and_rejects(spark, settings, tmp_path):
    store = DeltaStore.from_settings(spark, settings)
    lines = [json.dumps({"id": f"o/m{i}", "pipeline_tag": "text-generation" if i % 2 else "fill-mask"})
             for i in range(10)] + ["{broken"]
    path = tmp_path / "s.jsonl"
    path.write_text("\n".join(lines) + "\n")
    ingest(spark, store, f"snapshot:{path}", settings, progress=lambda _: None)
    assert {"hub_models", "ingest_rejects"} <= set(register_tables(spark, store))
    rows = run_query(spark, store, "SELECT pipeline_tag, count(*) AS n FROM hub_models "
                                   "GROUP BY 1 ORDER BY 1").collect()
    assert [(r.pipeline_tag, r.n) for r in rows] == [("fill-mask", 5), ("text-generation", 5)]
    assert run_query(spark, store, "SELECT reason FROM ingest_rejects").collect()[0].reason == "invalid_json"
