"""The nightly report: one self-contained HTML page and the same figures as JSON.

``semfin report [--out DIR]`` (and the nightly, after lineage) writes
``<DIR>/report.html`` and ``<DIR>/report.json`` (default ``<warehouse>/reports``):

* per-field accuracy of the last ``semfin evaluate`` on the warehouse against Hub Avg and
  Graph Avg (``<warehouse>/reports/evaluation.json``, kept by ``semfin evaluate``), and how
  often the values impute would write at the default thresholds were right there;
* coverage of each field before and after imputation, and the imputed confidences;
* the top reuse-method and licence patterns, the share of incompatible licence chains
  before and after imputation, the largest lineage components;
* what changed since the previous nightly: new models, newly imputed values, new and
  resolved licence conflicts, new chains. The previous state is read by Delta time
  travel, at the table versions the last run's first stage started from (the ``runs``
  table's ``input_versions``).

Implementation details: every figure is one SQL aggregate on an engine of
:mod:`semfin_spark.sql` (DuckDB on a local warehouse, no JVM; Spark SQL otherwise), so
nothing that grows with the Hub reaches this process but a few top-N lists. Plots are drawn
by matplotlib (Agg) into PNGs embedded as data URIs: the page needs no network to view.
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import io
import json
import os
from typing import Any, Callable

from semfin_spark.sql import Engine, Result

FIELDS = ("license", "reuse_method", "pipeline_tag", "library_name", "model_type")
CHANGE_SAMPLE = 10
"""Examples listed per kind of change (the counts are exact)."""
CONFIDENCE_BINS = 20


def _rows(engine: Engine, statement: str, limit: int = 10_000) -> list[dict[str, Any]]:
    result: Result = engine.query(statement, limit)
    return [dict(zip(result.columns, row)) for row in result.rows]


def _scalar(engine: Engine, statement: str) -> Any:
    rows = engine.query(statement, 1).rows
    return rows[0][0] if rows else None


# ------------------------------------------------------------------ figures

def report_figures(engine: Engine, *, evaluation: dict[str, Any] | None,
                   warehouse: str) -> dict[str, Any]:
    """Every figure of the report, JSON-ready.

    Args:
        engine: the warehouse at its current versions (needs model_fields and the lineage
            tables: a warehouse the nightly has run on).
        evaluation: the last ``semfin evaluate`` report, or None.
        warehouse: named in the report.

    The changes are computed when the engine has the ``previous_<table>`` views (the
    warehouse as the last run found it, :func:`previous_versions`), else left None.
    """
    views = set(engine.views())
    missing = {"model_fields", "lineage_chains", "license_conflicts",
               "lineage_components"} - views
    if missing:
        from semfin_spark.sql import missing_table

        raise missing_table(sorted(missing)[0], warehouse)
    figures: dict[str, Any] = {
        "warehouse": warehouse,
        "generated_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "engine": engine.name,
        "models": _scalar(engine, "SELECT count(*) FROM hub_models WHERE deleted_at IS NULL"),
        "accuracy": _accuracy(evaluation),
        "coverage": _rows(engine, """
            SELECT field, count(*) AS models,
                   sum(CASE WHEN value_source = 'declared' THEN 1 ELSE 0 END) AS declared,
                   sum(CASE WHEN value_source = 'imputed' THEN 1 ELSE 0 END) AS imputed
            FROM model_fields GROUP BY field ORDER BY field"""),
        "confidence": _confidence(engine),
        "reuse_patterns": _rows(engine, """
            SELECT pattern, count(*) AS chains FROM lineage_chains
            WHERE variant = 'with_imputed' AND pattern IS NOT NULL
            GROUP BY pattern ORDER BY chains DESC, pattern LIMIT 10"""),
        "license_patterns": _rows(engine, """
            SELECT license_pattern, count(*) AS chains FROM lineage_chains
            WHERE variant = 'with_imputed' AND license_pattern IS NOT NULL
            GROUP BY license_pattern ORDER BY chains DESC, license_pattern LIMIT 10"""),
        "incompatible": _incompatible(engine),
        "largest_components": _rows(engine, """
            SELECT component_id, count(*) AS nodes FROM lineage_components
            GROUP BY component_id ORDER BY nodes DESC, component_id LIMIT 10"""),
        "changes": _changes(engine) if "previous_hub_models" in views else None,
    }
    for row in figures["coverage"]:
        row["filled_before"] = round(row["declared"] / row["models"], 4) if row["models"] else None
        row["filled_after"] = (round((row["declared"] + row["imputed"]) / row["models"], 4)
                               if row["models"] else None)
    return figures


def _accuracy(evaluation: dict[str, Any] | None) -> dict[str, Any] | None:
    if not evaluation:
        return None
    fields, imputed = {}, {}
    for field, figures in evaluation.get("fields", {}).items():
        methods = figures.get("methods")
        if methods:
            fields[field] = {m: v.get("accuracy") for m, v in methods.items()}
        if figures.get("imputed"):  # absent from an evaluation written before 2026-12-06
            imputed[field] = {**figures["imputed"],
                              "ece": (figures.get("calibration") or {}).get("ece")}
    return {"split": evaluation.get("split"), "seed": evaluation.get("seed"),
            "source": evaluation.get("source"), "fields": fields, "imputed": imputed}


def _confidence(engine: Engine) -> dict[str, list[int]]:
    rows = _rows(engine, f"""
        SELECT field,
               least(CAST(floor(imputed_confidence * {CONFIDENCE_BINS}) AS INT),
                     {CONFIDENCE_BINS - 1}) AS bin,
               count(*) AS n
        FROM model_fields
        WHERE declared_value IS NULL AND imputed_confidence IS NOT NULL
        GROUP BY 1, 2""")
    out = {field: [0] * CONFIDENCE_BINS for field in sorted({r["field"] for r in rows})}
    for r in rows:
        out[r["field"]][int(r["bin"])] += int(r["n"])
    return out


def _incompatible(engine: Engine) -> dict[str, Any]:
    """Chains with a complete licence sequence, and those with a conflicting edge, per
    variant: the lineage stage's ``incompatible_share``, computed again from the tables."""
    totals = {r["variant"]: r["chains"] for r in _rows(engine, """
        SELECT variant, count(*) AS chains FROM lineage_chains
        WHERE license_pattern IS NOT NULL GROUP BY variant""")}
    bad = {r["variant"]: r["chains"] for r in _rows(engine, """
        SELECT n.variant, count(DISTINCT n.chain) AS chains
        FROM lineage_chain_nodes n
        JOIN lineage_chain_nodes p ON p.variant = n.variant AND p.chain = n.chain
                                  AND p.position = n.position - 1
        JOIN license_conflicts k ON k.variant = n.variant AND k.child = n.node
                                AND k.parent = p.node
        WHERE n.license_pattern IS NOT NULL
        GROUP BY n.variant""")}
    return {variant: {"license_chains": totals.get(variant, 0),
                      "incompatible": bad.get(variant, 0),
                      "share": (round(bad.get(variant, 0) / totals[variant], 4)
                                if totals.get(variant) else None)}
            for variant in ("declared", "with_imputed")}


def _changes(engine: Engine) -> dict[str, Any]:
    """New models, newly imputed values, new and resolved conflicts, new chains: the
    current tables against the ``previous_`` views (see :func:`previous_versions`)."""
    def count_and_sample(where_sql: str, columns: str, order: str) -> dict[str, Any]:
        return {"count": _scalar(engine, f"SELECT count(*) FROM {where_sql}"),
                "sample": _rows(engine, f"SELECT {columns} FROM {where_sql} ORDER BY {order}",
                                CHANGE_SAMPLE)}

    return {
        "new_models": count_and_sample(
            "hub_models h WHERE h.deleted_at IS NULL AND NOT EXISTS "
            "(SELECT 1 FROM previous_hub_models p WHERE p.id = h.id)", "h.id", "h.id"),
        "newly_imputed": _rows(engine, """
            SELECT f.field, count(*) AS values_imputed
            FROM model_fields f
            LEFT JOIN previous_model_fields p ON p.model_id = f.model_id AND p.field = f.field
            WHERE f.value_source = 'imputed'
              AND (p.value_source IS DISTINCT FROM 'imputed' OR p.value IS DISTINCT FROM f.value)
            GROUP BY f.field ORDER BY f.field"""),
        "new_conflicts": count_and_sample(
            "license_conflicts k WHERE k.variant = 'with_imputed' AND NOT EXISTS "
            "(SELECT 1 FROM previous_license_conflicts p WHERE p.variant = k.variant "
            "AND p.child = k.child AND p.parent = k.parent)",
            "k.child, k.parent, k.child_license, k.parent_license, k.rule", "k.child, k.parent"),
        "resolved_conflicts": count_and_sample(
            "previous_license_conflicts p WHERE p.variant = 'with_imputed' AND NOT EXISTS "
            "(SELECT 1 FROM license_conflicts k WHERE k.variant = p.variant "
            "AND k.child = p.child AND k.parent = p.parent)",
            "p.child, p.parent, p.child_license, p.parent_license, p.rule", "p.child, p.parent"),
        "new_chains": count_and_sample(
            "lineage_chains c WHERE c.variant = 'with_imputed' AND NOT EXISTS "
            "(SELECT 1 FROM previous_lineage_chains p WHERE p.variant = c.variant "
            "AND p.path = c.path)", "c.root, c.leaf, c.depth, c.pattern", "c.root, c.leaf, c.path"),
    }


def previous_versions(engine: Engine) -> dict[str, int | None] | None:
    """The table versions the last run's first stage started from (``runs.input_versions``
    of its earliest row), or None when the warehouse records no run."""
    if "runs" not in engine.views():
        return None
    text = _scalar(engine, """
        SELECT input_versions FROM runs
        WHERE run_id = (SELECT run_id FROM runs ORDER BY started_at DESC LIMIT 1)
        ORDER BY started_at, attempt LIMIT 1""")
    if not text:
        return None
    versions = json.loads(text)
    return {name: (int(v) if v is not None else None) for name, v in versions.items()}


# ------------------------------------------------------------------ plots and the page

def _png(figure: Any) -> str:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=96, bbox_inches="tight")
    plt.close(figure)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def plots(figures: dict[str, Any]) -> dict[str, str]:
    """Each plot of the report as a base64 PNG, by name. A plot without data is left out
    (the page says why)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out: dict[str, str] = {}
    accuracy = (figures.get("accuracy") or {}).get("fields") or {}
    if accuracy:
        out["accuracy"] = _grouped_bars(
            list(accuracy), {m: [accuracy[f].get(m) or 0 for f in accuracy]
                             for m in ("semfin", "hub_avg", "graph_avg")},
            ylabel="accuracy (held-out split)", title="SemFin against the propagation baselines")
    if figures["coverage"]:
        rows = figures["coverage"]
        out["coverage"] = _grouped_bars(
            [r["field"] for r in rows],
            {"declared": [r["filled_before"] or 0 for r in rows],
             "declared + imputed": [r["filled_after"] or 0 for r in rows]},
            ylabel="share of models with a value", title="Coverage before and after imputation")
    if figures["confidence"]:
        fields = list(figures["confidence"])
        fig, axes = plt.subplots(1, len(fields), figsize=(2.6 * len(fields), 2.6), sharey=False,
                                 squeeze=False)
        edges = [i / CONFIDENCE_BINS for i in range(CONFIDENCE_BINS)]
        for ax, field in zip(axes[0], fields):
            ax.bar(edges, figures["confidence"][field], width=1 / CONFIDENCE_BINS, align="edge")
            ax.set_title(field, fontsize=9)
            ax.set_xlim(0, 1)
            ax.set_xlabel("confidence", fontsize=8)
        axes[0][0].set_ylabel("models")
        fig.suptitle("Confidence of the classifiers on models without a declared value",
                     y=1.06)
        out["confidence"] = _png(fig)
    for name, key, title in (("reuse_patterns", "pattern", "Top reuse-method patterns"),
                             ("license_patterns", "license_pattern", "Top licence patterns")):
        rows = figures[name]
        if rows:
            fig, ax = plt.subplots(figsize=(8, 0.4 * len(rows) + 1.2))
            ax.barh([_short(r[key]) for r in rows][::-1], [r["chains"] for r in rows][::-1])
            ax.set_xlabel("chains (imputed values included)")
            ax.set_title(title)
            out[name] = _png(fig)
    incompatible = figures["incompatible"]
    if any(v["license_chains"] for v in incompatible.values()):
        fig, ax = plt.subplots(figsize=(5, 3))
        labels = ["declared", "with imputed"]
        ax.bar(labels, [(incompatible[v]["share"] or 0) * 100 for v in incompatible])
        ax.set_ylabel("% of licence chains")
        ax.set_title("Incompatible licence chains")
        out["incompatible"] = _png(fig)
    if figures["largest_components"]:
        rows = figures["largest_components"]
        fig, ax = plt.subplots(figsize=(8, 0.4 * len(rows) + 1.2))
        ax.barh([_short(r["component_id"]) for r in rows][::-1], [r["nodes"] for r in rows][::-1])
        ax.set_xlabel("models in the component")
        ax.set_title("Largest lineage components")
        out["largest_components"] = _png(fig)
    return out


def _grouped_bars(groups: list[str], series: dict[str, list[float]], *, ylabel: str,
                  title: str) -> str:
    """Bars of shares (0 to 1), one colour per series, grouped by ``groups``: a PNG."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 3.6))
    width = 0.8 / len(series)
    for i, (label, values) in enumerate(series.items()):
        ax.bar([x + (i - (len(series) - 1) / 2) * width for x in range(len(groups))], values,
               width, label=label)
    ax.set_xticks(list(range(len(groups))), groups)
    ax.set_ylim(0, 1)
    ax.set_ylabel(ylabel)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.1), ncol=3, frameon=False)
    ax.set_title(title)
    return _png(fig)


def _short(text: Any, width: int = 60) -> str:
    text = str(text)
    return text if len(text) <= width else text[: width - 1] + "…"


_PLOT_TEXT = {
    "accuracy": ("Accuracy", "No evaluation on record: run <code>semfin evaluate</code> on "
                             "this warehouse."),
    "coverage": ("Coverage", "No fields yet."),
    "confidence": ("Confidence", "No model without a declared value was scored."),
    "reuse_patterns": ("Reuse-method patterns", "No complete reuse chain."),
    "license_patterns": ("Licence patterns", "No complete licence chain."),
    "incompatible": ("Incompatible licence chains", "No complete licence chain."),
    "largest_components": ("Lineage components", "No lineage."),
}


def render_html(figures: dict[str, Any], images: dict[str, str]) -> str:
    """The page: every plot (or why it is missing), the change tables, the figures' JSON."""
    e = html.escape
    parts = [f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>SemFin nightly report</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em auto; max-width: 60em; color: #222; }}
h1 {{ margin-bottom: 0; }} .meta {{ color: #666; margin-top: .3em; }}
section {{ margin: 2em 0; }} img.plot {{ max-width: 100%; }}
table {{ border-collapse: collapse; margin: .5em 0; }}
td, th {{ border: 1px solid #ccc; padding: .2em .6em; text-align: left; font-size: 90%; }}
.none {{ color: #888; font-style: italic; }}
</style></head><body>
<h1>SemFin nightly report</h1>
<p class="meta">{e(str(figures['warehouse']))} · {e(figures['generated_at'])} ·
{figures['models']} models · read with {e(figures['engine'])}</p>
"""]
    for name, (title, empty) in _PLOT_TEXT.items():
        parts.append(f'<section id="{name}"><h2>{e(title)}</h2>')
        if name in images:
            parts.append(f'<img class="plot" data-plot="{name}" alt="{e(title)}" '
                         f'src="data:image/png;base64,{images[name]}">')
        else:
            parts.append(f'<p class="none">{empty}</p>')
        if name == "accuracy":
            parts.append(_imputed_html(figures.get("accuracy")))
        parts.append("</section>")
    parts.append(_changes_html(figures.get("changes")))
    parts.append('<section id="figures"><h2>Figures</h2><details><summary>report.json</summary>'
                 f'<pre>{e(json.dumps(figures, indent=1, default=str))}</pre></details></section>')
    # Marks each plot the browser decoded, so a headless check can tell drawn from broken.
    parts.append("""<script>
window.addEventListener('load', function () {
  document.querySelectorAll('img.plot').forEach(function (img) {
    img.setAttribute('data-drawn', String(img.complete && img.naturalWidth > 0));
  });
});
</script></body></html>""")
    return "\n".join(parts)


def _imputed_html(accuracy: dict[str, Any] | None) -> str:
    """The table a compliance reader asks for first: of the held-out models, how many the
    default thresholds would fill, and how often those values were right."""
    imputed = (accuracy or {}).get("imputed")
    if not imputed:
        return ""

    def shown(value: float | None, form: str) -> str:
        return "–" if value is None else format(value, form)

    rows = "".join(
        f'<tr data-field="{html.escape(field)}"><td>{html.escape(field)}</td><td>{f["n"]}</td>'
        f'<td>{shown(f["coverage"], ".1%")}</td><td>{shown(f["precision"], ".1%")}</td>'
        f'<td>{shown(f.get("ece"), ".3f")}</td></tr>'
        for field, f in imputed.items())
    return (f'<h3>Imputed at the default thresholds ({html.escape(str(accuracy.get("split")))} '
            f'split, seed {html.escape(str(accuracy.get("seed")))})</h3>'
            '<table id="imputed"><tr><th>field</th><th>values imputed</th>'
            '<th>of the held-out models</th><th>right</th><th>calibration error</th></tr>'
            f'{rows}</table>')


def _changes_html(changes: dict[str, Any] | None) -> str:
    e = html.escape
    if changes is None:
        return ('<section id="changes"><h2>Since the previous nightly</h2><p class="none">'
                'No nightly run is recorded in this warehouse.</p></section>')
    out = ['<section id="changes"><h2>Since the previous nightly</h2><table>'
           '<tr><th>change</th><th>count</th></tr>']
    labels = {"new_models": "new models", "new_conflicts": "new licence conflicts",
              "resolved_conflicts": "resolved licence conflicts", "new_chains": "new chains"}
    for key, label in labels.items():
        out.append(f"<tr><td>{label}</td><td>{changes[key]['count']}</td></tr>")
    for row in changes["newly_imputed"]:
        out.append(f"<tr><td>newly imputed {e(row['field'])}</td>"
                   f"<td>{row['values_imputed']}</td></tr>")
    out.append("</table>")
    for key, label in labels.items():
        sample = changes[key]["sample"]
        if sample:
            columns = list(sample[0])
            out.append(f"<h3>{label} (first {len(sample)})</h3><table><tr>"
                       + "".join(f"<th>{e(c)}</th>" for c in columns) + "</tr>")
            for row in sample:
                out.append("<tr>" + "".join(f"<td>{e(str(row[c]))}</td>" for c in columns)
                           + "</tr>")
            out.append("</table>")
    out.append("</section>")
    return "\n".join(out)


def write_report(figures: dict[str, Any], out_dir: str, spark: Any = None) -> tuple[str, str]:
    """Write ``report.html`` and ``report.json`` into ``out_dir`` (each replaced whole, so
    a reader never sees half a file; a remote ``out_dir``, as an object-store warehouse's
    ``reports``, through ``spark``); return their paths."""
    from semfin_spark.session import write_text

    page = render_html(figures, plots(figures))
    paths = []
    for name, text in (("report.json", json.dumps(figures, indent=2, default=str)),
                       ("report.html", page)):
        path = os.path.join(out_dir, name)
        write_text(path, text + "\n", spark)
        paths.append(path)
    return paths[1], paths[0]


def default_out_dir(warehouse: str) -> str:
    """Where the report goes unless told: ``<warehouse>/reports`` (a ``file:`` warehouse
    by its local folder)."""
    from semfin_spark.settings import local_path

    return os.path.join(local_path(warehouse) or warehouse, "reports")


def make_report(engine: Engine, warehouse: str, out_dir: str, *,
                progress: Callable[[str], None] = print) -> dict[str, Any]:
    """Build the figures on ``engine`` and write the page; return the figures with the
    paths written under ``"html"`` and ``"json"``.

    Args:
        engine: the warehouse at its current versions.
        warehouse: its location (a local folder for the evaluation file).
        out_dir: where the page goes.

    Raises:
        semfin_spark.sql.MissingTableError: the warehouse lacks a table the report reads
            (the nightly has not run there).
    """
    from semfin_spark.evaluate import evaluation_path
    from semfin_spark.session import read_text

    spark = getattr(engine, "spark", None)  # None on DuckDB, which reads local warehouses
    text = read_text(evaluation_path(warehouse), spark)
    evaluation = json.loads(text) if text is not None else None
    versions = previous_versions(engine)
    if versions is not None:
        engine.add_previous_views(versions)
    figures = report_figures(engine, evaluation=evaluation, warehouse=warehouse)
    html_path, json_path = write_report(figures, out_dir, spark)
    progress(f"report: {html_path} (figures in {json_path})")
    return {**figures, "html": html_path, "json": json_path}
