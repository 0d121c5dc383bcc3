"""Typed SemFin settings, loaded once and passed down.

Sources, later ones winning: ``conf/semfin.yaml`` (the defaults shipped with the
package), a file given with ``--conf FILE`` (or ``SEMFIN_CONF``), environment variables,
then command-line flags. This is the only module that reads the environment; every other
module takes a :class:`Settings` (or a piece of it) as an argument.

Environment variables:
    SEMFIN_WAREHOUSE: the warehouse root.
    SEMFIN_CONF: an override file, as ``--conf``.
    MLFLOW_TRACKING_URI: the MLflow tracking store.
    HF_ENDPOINT, HF_TOKEN: the Hub to crawl and its token (the token is never printed).
    SEMFIN_<SECTION>__<KEY>: any key of ``conf/semfin.yaml``, parsed as YAML
        (``SEMFIN_FLATTEN__MAX_DEPTH=16``, ``SEMFIN_TRAIN__FIELDS=[license]``).
"""

from __future__ import annotations

import dataclasses
import functools
import os
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Mapping

import yaml

FIELDS = ("license", "reuse_method", "pipeline_tag", "library_name", "model_type")
"""The five metadata fields SemFin declares, imputes and reports, in this spelling everywhere."""


class SettingsError(ValueError):
    """A configuration file or override is malformed or names an unknown setting."""


@dataclass(frozen=True)
class SparkSettings:
    app_name: str = "semfin"
    master: str = "local[*]"
    defaults_file: str = "spark-defaults.conf"


@dataclass(frozen=True)
class DeltaSettings:
    vacuum_retention_hours: float = 168.0


@dataclass(frozen=True)
class GraphSettings:
    backend: str = "auto"
    local_max_edges: int = 5_000_000


@dataclass(frozen=True)
class IngestSettings:
    reject_raw_max_chars: int = 2000
    raw_max_chars: int = 200_000
    max_record_bytes: int = 16_000_000
    hub_workers: int = 8
    hub_max_retries: int = 5
    hub_backoff_seconds: float = 1.0
    hub_backoff_max_seconds: float = 60.0
    hub_page_size: int = 1000


ACCOUNT_TIERS = ("anonymous", "free", "pro")


@dataclass(frozen=True)
class CrawlSettings:
    tier: str = "auto"
    api_per_window: Mapping[str, int] = field(
        default_factory=lambda: {"anonymous": 500, "free": 1000, "pro": 2500})
    resolves_per_window: Mapping[str, int] = field(
        default_factory=lambda: {"anonymous": 3000, "free": 5000, "pro": 12000})
    window_seconds: float = 300.0
    pages_per_file: int = 10
    configs_per_file: int = 1000
    timeout_seconds: float = 30.0
    progress_seconds: float = 30.0
    retention_days: float = 7.0
    max_deleted_fraction: float = 0.2
    max_fetch_minutes: float = 0.0

    def __post_init__(self) -> None:
        if self.tier != "auto" and self.tier not in ACCOUNT_TIERS:
            raise SettingsError(f"setting crawl.tier must be auto or one of "
                                f"{', '.join(ACCOUNT_TIERS)}, got {self.tier!r}")
        for name in ("api_per_window", "resolves_per_window"):
            limits = getattr(self, name)
            for tier in ACCOUNT_TIERS:
                value = limits.get(tier)
                if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                    raise SettingsError(f"setting crawl.{name}.{tier} must be a positive whole "
                                        f"number, got {value!r}")

    def budget(self, has_token: bool) -> dict[str, int]:
        """Requests per window by kind for the account tier (``auto``: free with a token,
        else anonymous)."""
        tier = self.tier if self.tier != "auto" else ("free" if has_token else "anonymous")
        return {"api": self.api_per_window[tier], "resolve": self.resolves_per_window[tier]}


@dataclass(frozen=True)
class SyntheticSettings:
    block_size: int = 64


@dataclass(frozen=True)
class FlattenSettings:
    max_depth: int = 32
    max_keys: int = 20_000
    max_list_items: int = 4096
    max_string_chars: int = 1024
    max_config_bytes: int = 8_000_000
    reject_raw_max_chars: int = 2000


@dataclass(frozen=True)
class TrainSettings:
    fields: tuple[str, ...] = FIELDS
    min_class_support: int = 2
    min_labels: int = 50
    classifiers: tuple[str, ...] = ("logistic_regression", "naive_bayes")
    max_features: int = 262_144
    min_feature_df: int = 2
    registered_model_prefix: str = "semfin-"
    retrain_after_days: float = 7.0
    retrain_label_change: float = 0.05
    neighbour_vote: bool = True
    max_training_models: Mapping[str, int] = field(
        default_factory=lambda: {f: 0 if f == "license" else 50_000 for f in FIELDS})


@dataclass(frozen=True)
class EvaluateSettings:
    test_fraction: float = 0.2
    seed: int = 0


@dataclass(frozen=True)
class ImputeSettings:
    confidence_threshold: Mapping[str, float] = field(
        default_factory=lambda: {f: 0.6 for f in FIELDS}
    )
    configless_threshold: Mapping[str, float] = field(
        default_factory=lambda: {f: 0.0 for f in FIELDS}
    )
    undeclared_family_threshold: Mapping[str, float] = field(
        default_factory=lambda: {f: 0.0 for f in FIELDS}
    )

    def threshold(self, name: str, configless: bool = False,
                  undeclared_family: bool = False) -> float:
        """The confidence a model's imputed value of field ``name`` needs: the field's
        ``confidence_threshold``, raised to its ``configless_threshold`` for a model without
        a config.json and to its ``undeclared_family_threshold`` for a model with lineage
        none of whose relatives declares the field (the highest that applies). Above 1: never
        imputed.

        Examples:
            >>> s = ImputeSettings({"pipeline_tag": 0.5}, {"pipeline_tag": 0.7}, {"pipeline_tag": 0.99})
            >>> s.threshold("pipeline_tag"), s.threshold("pipeline_tag", configless=True)
            (0.5, 0.7)
            >>> s.threshold("pipeline_tag", configless=True, undeclared_family=True)
            0.99
            >>> s.threshold("license", configless=True, undeclared_family=True)
            0.5
        """
        bars = [float(self.confidence_threshold.get(name, 0.5))]
        if configless:
            bars.append(float(self.configless_threshold.get(name, 0.0)))
        if undeclared_family:
            bars.append(float(self.undeclared_family_threshold.get(name, 0.0)))
        return max(bars)


@dataclass(frozen=True)
class LineageSettings:
    max_depth: int = 32
    max_fanout: int = 100_000
    max_chains: int = 50_000_000
    licenses_file: str = "licenses.yaml"


@dataclass(frozen=True)
class AibomSettings:
    nightly: bool = False
    dir: str = ""

    def out_dir(self, warehouse: str) -> str:
        """Where the nightly keeps its BOMs: ``dir``, else ``<warehouse>/aibom``; a local
        path made absolute, as the warehouse is (:func:`absolute_location`), since the
        executors write there.

        Examples:
            >>> AibomSettings(dir="/srv/boms").out_dir("/wh"), AibomSettings().out_dir("/wh/")
            ('/srv/boms', '/wh/aibom')
        """
        return absolute_location(self.dir) if self.dir else f"{warehouse.rstrip('/')}/aibom"


@dataclass(frozen=True)
class MlflowSettings:
    tracking_uri: str = ""
    experiment: str = "semfin"


@dataclass(frozen=True)
class HubSettings:
    endpoint: str = "https://huggingface.co"
    token: str | None = field(default=None, repr=False)

    def __repr__(self) -> str:  # the token never reaches a log line
        return f"HubSettings(endpoint={self.endpoint!r}, token={'***' if self.token else None})"


@dataclass(frozen=True)
class Settings:
    """Everything a stage needs to know about where and how to run."""

    warehouse: str = "./semfin-warehouse"
    conf_dir: str = ""
    spark: SparkSettings = field(default_factory=SparkSettings)
    delta: DeltaSettings = field(default_factory=DeltaSettings)
    graph: GraphSettings = field(default_factory=GraphSettings)
    ingest: IngestSettings = field(default_factory=IngestSettings)
    crawl: CrawlSettings = field(default_factory=CrawlSettings)
    synthetic: SyntheticSettings = field(default_factory=SyntheticSettings)
    flatten: FlattenSettings = field(default_factory=FlattenSettings)
    train: TrainSettings = field(default_factory=TrainSettings)
    evaluate: EvaluateSettings = field(default_factory=EvaluateSettings)
    impute: ImputeSettings = field(default_factory=ImputeSettings)
    lineage: LineageSettings = field(default_factory=LineageSettings)
    aibom: AibomSettings = field(default_factory=AibomSettings)
    mlflow: MlflowSettings = field(default_factory=MlflowSettings)
    hub: HubSettings = field(default_factory=HubSettings)

    def table_path(self, table: str) -> str:
        """Where the Delta table ``table`` lives: ``<warehouse>/<table>``."""
        return f"{self.warehouse.rstrip('/')}/{table}"

    @property
    def tracking_uri(self) -> str:
        """The MLflow tracking URI: the configured one, else SQLite inside the warehouse."""
        if self.mlflow.tracking_uri:
            return self.mlflow.tracking_uri
        local = local_path(self.warehouse)
        if local is None:
            raise SettingsError(
                f"the warehouse {self.warehouse} is not a local folder, so the default MLflow "
                "store (SQLite inside the warehouse) cannot live there: set MLFLOW_TRACKING_URI "
                "(or mlflow.tracking_uri) to a tracking server or a local sqlite:/// path")
        return f"sqlite:///{os.path.abspath(local)}/mlflow.db"

    def conf_file(self, name: str) -> Path:
        """A file of the configuration folder (``licenses.yaml``, ``spark-defaults.conf``)."""
        return Path(self.conf_dir) / name

    def replace(self, **changes: Any) -> "Settings":
        """A copy with top-level fields replaced (``settings.replace(warehouse="/tmp/w")``)."""
        return dataclasses.replace(self, **changes)


def default_conf_dir() -> Path:
    """The folder of the shipped defaults: the package's copy, else the checkout's ``conf/``.

    A package imported from a zip (a wheel given to spark-submit with ``--py-files``) has
    no folder on disk: its ``conf/`` is copied out once per process into a temporary one.
    """
    packaged = resources.files("semfin_spark") / "conf"
    if packaged.is_dir() and (packaged / "semfin.yaml").is_file():
        if isinstance(packaged, Path):
            return packaged
        return _extracted_conf(packaged)
    return Path(__file__).resolve().parent.parent / "conf"


@functools.lru_cache(maxsize=1)
def _extracted_conf(packaged: Any) -> Path:
    import atexit
    import shutil
    import tempfile

    folder = Path(tempfile.mkdtemp(prefix="semfin-conf-"))
    atexit.register(shutil.rmtree, folder, True)
    pending = [(packaged, folder)]
    while pending:  # conf/ and its subfolders (conf/queries/)
        source, target = pending.pop()
        for item in source.iterdir():
            if item.is_file():
                (target / item.name).write_bytes(item.read_bytes())
            elif item.is_dir():
                (target / item.name).mkdir()
                pending.append((item, target / item.name))
    return folder


def load_settings(
    conf_file: str | os.PathLike[str] | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Settings:
    """Load settings from the defaults, an override file, the environment and flags.

    Args:
        conf_file: a YAML file whose keys override the defaults (``--conf FILE``).
        environ: the environment to read; ``os.environ`` when omitted.
        overrides: flag values, as ``{"warehouse": "...", "flatten.max_depth": 8}``;
            ``None`` values are ignored.

    Returns:
        A frozen :class:`Settings`.

    Raises:
        SettingsError: a file is not a YAML mapping, a key is unknown, a value has the
            wrong type.

    Examples:
        >>> s = load_settings(environ={"SEMFIN_WAREHOUSE": "/tmp/w"})
        >>> s.table_path("hub_models")
        '/tmp/w/hub_models'
    """
    env = os.environ if environ is None else environ
    conf_dir = default_conf_dir()
    merged = _read_yaml(conf_dir / "semfin.yaml")
    conf_file = conf_file or env.get("SEMFIN_CONF")
    if conf_file:
        _deep_update(merged, _read_yaml(Path(conf_file)))
    _deep_update(merged, _env_overrides(env))
    for dotted, value in (overrides or {}).items():
        if value is not None:
            _deep_update(merged, _nest(dotted, value))
    merged.setdefault("conf_dir", str(conf_dir))
    merged["warehouse"] = absolute_location(str(merged.get("warehouse") or "./semfin-warehouse"))
    return _build(Settings, merged, "")


def local_path(location: str) -> str | None:
    """The local path of a location (``file://`` or ``file:`` dropped), or None for another
    scheme.

    Examples:
        >>> local_path("file:///tmp/wh"), local_path("file:/tmp/wh"), local_path("./wh")
        ('/tmp/wh', '/tmp/wh', './wh')
        >>> local_path("s3a://b/wh") is None
        True
    """
    if location.startswith("file:"):
        return location[len("file://"):] if location.startswith("file://") else location[len("file:"):]
    return None if "://" in location else location


def absolute_location(location: str) -> str:
    """A local path made absolute (``file:`` URIs and other schemes are kept as given).

    Executors do not share the driver's working directory: on a cluster, a warehouse
    given as ``./wh`` would be written relative to each executor's own folder.

    Examples:
        >>> absolute_location("s3a://bucket/wh")
        's3a://bucket/wh'
        >>> absolute_location("/tmp/x/../wh")
        '/tmp/wh'
    """
    if "://" in location or location.startswith("file:"):
        return location
    return os.path.abspath(location)


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise SettingsError(f"configuration file not found: {path}") from exc
    except yaml.YAMLError as exc:
        raise SettingsError(f"configuration file {path} is not valid YAML: {exc}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise SettingsError(f"configuration file {path} must hold a mapping at the top")
    return data


def _env_overrides(env: Mapping[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if env.get("SEMFIN_WAREHOUSE"):
        out["warehouse"] = env["SEMFIN_WAREHOUSE"]
    if env.get("MLFLOW_TRACKING_URI"):
        out.setdefault("mlflow", {})["tracking_uri"] = env["MLFLOW_TRACKING_URI"]
    hub: dict[str, Any] = {}
    if env.get("HF_ENDPOINT"):
        hub["endpoint"] = env["HF_ENDPOINT"]
    if env.get("HF_TOKEN"):
        hub["token"] = env["HF_TOKEN"]
    if hub:
        out["hub"] = hub
    for name, raw in env.items():
        if name.startswith("SEMFIN_") and "__" in name:
            section, _, key = name[len("SEMFIN_"):].partition("__")
            try:
                value = yaml.safe_load(raw)
            except yaml.YAMLError as exc:
                raise SettingsError(f"environment variable {name} is not valid YAML: "
                                    f"{str(exc).splitlines()[0]}") from exc
            _deep_update(out, {section.lower(): {key.lower(): value}})
    return out


def _nest(dotted: str, value: Any) -> dict[str, Any]:
    head, _, rest = dotted.partition(".")
    return {head: _nest(rest, value) if rest else value}


def _deep_update(base: dict[str, Any], new: Mapping[str, Any]) -> None:
    for key, value in new.items():
        if isinstance(value, Mapping) and isinstance(base.get(key), dict):
            _deep_update(base[key], value)
        else:
            base[key] = value


def _build(cls: type, data: Mapping[str, Any], where: str) -> Any:
    known = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise SettingsError(f"unknown setting(s) {', '.join(where + k for k in unknown)}")
    kwargs: dict[str, Any] = {}
    for name, value in data.items():
        default = known[name].default
        if default is dataclasses.MISSING:
            default = known[name].default_factory()  # type: ignore[misc]
        if dataclasses.is_dataclass(default):
            if not isinstance(value, Mapping):
                raise SettingsError(f"setting {where}{name} must be a mapping")
            kwargs[name] = _build(type(default), value, f"{where}{name}.")
        else:
            kwargs[name] = _coerce(value, default, f"{where}{name}")
    return cls(**kwargs)


_MAY_BE_ZERO = frozenset({"evaluate.seed", "delta.vacuum_retention_hours", "ingest.hub_max_retries",
                          "ingest.hub_backoff_seconds",
                          "crawl.retention_days", "crawl.max_deleted_fraction",
                          "crawl.max_fetch_minutes", "train.retrain_after_days",
                          "train.retrain_label_change", "train.max_training_models"})
"""Numeric settings (or mappings of them) for which 0 means something; every other limit
must be positive."""
_FRACTIONS = frozenset({"evaluate.test_fraction"})
_AT_MOST_ONE = frozenset({"crawl.max_deleted_fraction"})


def _coerce(value: Any, default: Any, name: str) -> Any:
    if isinstance(default, tuple):
        if not isinstance(value, (list, tuple)):
            raise SettingsError(f"setting {name} must be a list, got {value!r}")
        return tuple(value)
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise SettingsError(f"setting {name} must be true or false, got {value!r}")
        return value
    if isinstance(default, (int, float)) and not isinstance(default, bool):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
            raise SettingsError(f"setting {name} must be a number, got {value!r}")
        if isinstance(default, int) and value != int(value):
            raise SettingsError(f"setting {name} must be a whole number, got {value!r}")
        # An entry of a mapping (train.max_training_models.license) is bound as the mapping.
        floor = 0 if {name, name.rpartition(".")[0]} & _MAY_BE_ZERO else 1e-12
        if value < floor or value == float("inf"):
            raise SettingsError(f"setting {name} must be {'at least 0' if floor == 0 else 'positive'}"
                                f" and finite, got {value!r}")
        if name in _FRACTIONS and value >= 1:
            raise SettingsError(f"setting {name} must be below 1, got {value!r}")
        if name in _AT_MOST_ONE and value > 1:
            raise SettingsError(f"setting {name} must be at most 1, got {value!r}")
        return type(default)(value) if isinstance(default, float) else int(value)
    if isinstance(default, Mapping):
        if not isinstance(value, Mapping):
            raise SettingsError(f"setting {name} must be a mapping, got {value!r}")
        merged = {**default, **value}  # a file may set one entry and keep the others
        whole = [isinstance(v, int) and not isinstance(v, bool) for v in default.values()]
        if whole and all(whole):
            # Whole-number entries per field (train.max_training_models): each is checked
            # as one, and a key that is no field is a typo, not a setting.
            unknown = sorted(set(value) - set(default))
            if unknown:
                raise SettingsError(f"setting {name} has unknown key(s) "
                                    f"{', '.join(map(str, unknown))}; choose from {', '.join(default)}")
            merged = {k: _coerce(v, 0, f"{name}.{k}") for k, v in merged.items()}
        return merged
    if value is not None and not isinstance(value, str):
        raise SettingsError(f"setting {name} must be text, got {value!r}")
    return value
