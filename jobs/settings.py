"""The pipeline config as typed models: one model per section of conf/*.yaml, and the ONE set of
defaults (a key a config leaves out takes the value written here, which is conf/demo.yaml's value
wherever demo.yaml sets it; the label fields of `samples:` are features.labels.LabelConfig's).

    settings = as_settings({"paths": {...}, "samples": {"kind": "rating"}})   # or load_config(path)
    settings.samples.attribution_window_minutes   # 30

Unknown keys are errors (with the closest valid name), and so are values of the wrong type, outside
their range or not among the allowed ones; jobs/config.py loads the YAML file, applies the command
line overrides and raises ConfigError with every problem on one line (the CLI exits with code 2).
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Mapping
from typing import Annotated, Any, Literal, TypeVar, get_args

from pydantic import Field, PrivateAttr, field_validator, model_validator

from features.errors import PipelineInputError
from features.labels import LabelConfig
from features.validation import Section, error_at, nested_errors, problems, validate

ModelName = Literal["lr", "gbdt_lr", "wide_deep", "deepfm"]  # the model registry (training/models BUILDERS)
MODEL_NAMES: tuple[str, ...] = get_args(ModelName)
Optimizer = Literal["adam", "adagrad", "ftrl", "sgd"]  # training/train.py OPTIMIZERS
UTC_SETTING = "spark.sql.session.timeZone"
PositiveInt = Annotated[int, Field(ge=1)]
Fraction = Annotated[float, Field(ge=0, le=1)]
SECTION = TypeVar("SECTION", bound=Section)


class SyntheticSettings(Section):
    """source.synthetic: features.synthetic_logs.generate_logs options (the days come from `dates`)."""

    users: PositiveInt = 2000
    items: PositiveInt = 500
    seed: int = 7
    impressions_per_user_day: float = Field(4.0, gt=0)
    late_fraction: Fraction | None = None  # None: generate_logs' own
    # the click logit shifts linearly from 0 on the first day to this on the last (a positive rate drifting
    # between the time split's train and test; conf/drift.yaml)
    ctr_drift: float = Field(0.0, ge=-5, le=5)


class SourceSettings(Section):
    kind: Literal["synthetic", "movielens", "raw"] | None = None  # required in a config file
    synthetic: SyntheticSettings = SyntheticSettings()
    movielens_path: str | None = None

    @model_validator(mode="after")
    def _movielens_has_a_path(self):
        if self.kind == "movielens" and not self.movielens_path:
            raise error_at("movielens_path", "missing (required when source.kind is movielens)")
        return self


class PathsSettings(Section):
    raw: str | None = None  # required in a config file (library calls may leave out what they do not use)
    warehouse: str | None = None
    # the directory holding `_artifacts/` (samples shards, boosters, models, reports; jobs/artifacts.py),
    # default the warehouse; a local or mounted path, required when the warehouse is an object store
    artifacts: str | None = None

    def artifacts_home(self, warehouse: str | None = None) -> str:
        """The directory whose `_artifacts/` the stages from samples on read and write with local file
        APIs: paths.artifacts, else the warehouse (`warehouse`: the root of the tables a job opened,
        default paths.warehouse) when it is a local (or mounted) path. An object-store URI in either
        place is a ConfigError naming the key and what to set."""
        from features.storage import resolve
        from jobs.config import ConfigError

        if self.artifacts is not None:
            if not resolve(self.artifacts).is_local:
                raise ConfigError(
                    f"paths.artifacts: {self.artifacts} is an object store; it must be a local or mounted "
                    "directory (file artefacts are read and written with local file APIs)"
                )
            return self.artifacts.removeprefix("file://")
        warehouse = warehouse if warehouse is not None else self.required("warehouse")
        if not resolve(warehouse).is_local:
            raise ConfigError(
                f"paths.artifacts is not set and the warehouse {warehouse} is an object store: the stages from "
                "samples on keep file artefacts (Parquet shards, boosters, Keras models, reports) under "
                "<paths.artifacts>/_artifacts with local file APIs; set paths.artifacts to a directory the "
                "driver and the executors share (a mounted volume, e.g. /mnt/recpipe)"
            )
        return warehouse.removeprefix("file://")

    def required(self, key: Literal["raw", "warehouse"]) -> str:
        """paths.<key> where a job needs it: always set in a loaded config file (jobs.config REQUIRED_KEYS);
        a library call's settings that leave it out are a ConfigError."""
        value = getattr(self, key)
        if value is None:
            from jobs.config import ConfigError

            raise ConfigError(f"paths.{key} is not set")
        return value


class DatesSettings(Section):
    start: dt.date | None = None  # required in a config file
    end: dt.date | None = None

    @field_validator("start", "end", mode="before")
    @classmethod
    def _iso_date(cls, value: Any, info) -> Any:
        if value is None or isinstance(value, dt.date):
            return value
        try:
            return dt.date.fromisoformat(str(value))
        except ValueError:
            raise ValueError(f"invalid {info.field_name} date '{value}': use YYYY-MM-DD") from None


class SparkSettings(Section):
    master: str | None = None  # required in a config file; spark-submit's --master wins under spark-submit
    app_name: str = "recpipe"  # the one key whose demo value (recpipe-demo) is not the default
    log_level: Literal["ALL", "DEBUG", "INFO", "WARN", "ERROR", "FATAL", "OFF", "TRACE"] = "WARN"
    conf: dict[str, str] = {}  # Spark settings by their own dotted names
    # ship the project's code to the executors (jobs/dist.py zip, SparkContext.addPyFile): auto = for every
    # master but local[...] (whose workers import it from the driver's installation)
    ship_code: Literal["auto", "always", "never"] = "auto"

    @field_validator("conf", mode="before")
    @classmethod
    def _scalars_as_text(cls, value: Any) -> Any:
        if value is None:
            return {}
        if not isinstance(value, Mapping):
            return value  # pydantic reports the type
        conf = {}
        for key, setting in value.items():
            if isinstance(setting, (Mapping, list, tuple)) or setting is None:
                raise error_at(str(key), f"a Spark setting is one value (text, number or boolean), got {setting!r}")
            conf[str(key)] = str(setting).lower() if isinstance(setting, bool) else str(setting)
        if conf.get(UTC_SETTING, "UTC") != "UTC":
            raise ValueError(
                f"{UTC_SETTING} is {conf[UTC_SETTING]!r} (config or --conf): recpipe's day boundaries "
                f"are UTC (event dates, drops, snapshots); remove the setting"
            )
        return conf


class StorageSettings(Section):
    """Object stores (features/storage.py): what is not a credential. Credentials come from the standard
    environment variables only (AWS_ACCESS_KEY_ID, GOOGLE_APPLICATION_CREDENTIALS, AZURE_STORAGE_ACCOUNT_KEY...)."""

    endpoint_url: str | None = None  # an S3-compatible server (MinIO, Ceph, moto); default AWS_ENDPOINT_URL or AWS
    region: str | None = None  # default AWS_REGION / AWS_DEFAULT_REGION
    allow_http: bool | None = None  # None: true for an http:// endpoint
    options: dict[str, str] = {}  # any other delta-rs storage option by its own name


class DeltaSettings(Section):
    backend: Literal["auto", "delta-rs", "delta-spark"] = "auto"


class IngestSettings(Section):
    allowed_lateness_hours: float = Field(48, ge=0)
    allowed_clock_skew_minutes: float = Field(60, ge=0)
    allow_missing_drops: bool = False
    redelivery_horizon_days: int | None = Field(None, ge=0)  # None: the lateness in days + 7
    redelivery_check: bool = True  # false: upstream guarantees unique event ids (no lookup)
    value_ranges: dict[str, Any] | None = None  # event type -> [min, max]: features.schemas.apply_range_overrides

    @field_validator("value_ranges", mode="before")
    @classmethod
    def _ranges_apply(cls, value: Any) -> Any:
        from features.schemas import apply_range_overrides, load_schema

        try:
            apply_range_overrides(load_schema("events"), value)
        except PipelineInputError as error:  # RangeOverrideError: names ingest.value_ranges.<type> itself
            raise ValueError(str(error)) from None
        return value

    @property
    def lateness_days(self) -> int:
        return math.ceil(self.allowed_lateness_hours / 24)


class SnapshotSettings(Section):
    rebuild_days: int | None = Field(None, ge=0)  # None: the lateness in days


class SamplesSettings(LabelConfig):
    """samples: the label fields (features.labels.LabelConfig) and the time split."""

    split_quantiles: tuple[float, float] = (0.8, 0.9)  # train < q0 <= valid < q1 <= test, by event time
    quantile_relative_error: float = Field(0.001, ge=0, lt=1)  # approxQuantile's; 0 = exact

    @field_validator("split_quantiles")
    @classmethod
    def _increasing_inside_0_1(cls, value: tuple[float, float]) -> tuple[float, float]:
        if not all(0 < q < 1 for q in value) or not value[0] < value[1]:
            raise ValueError(f"must be increasing and inside (0, 1), got {list(value)}")
        return value


class GbdtSettings(Section):
    """XGBoost (features/gbdt.py): on the driver when the samples are small, else on Spark."""

    # samples (all splits) up to this many rows are coded, trained and scored by xgboost on the driver
    # (one process, spark.driver.cores threads); more rows train with SparkXGBClassifier and are scored on the
    # executors; 0 = always Spark. The booster is the same either way.
    local_max_rows: int = Field(2_000_000, ge=0)
    num_workers: PositiveInt = 1
    n_estimators: PositiveInt = 100
    max_depth: PositiveInt = 5
    learning_rate: float = Field(0.1, gt=0)
    early_stopping_rounds: PositiveInt = 10
    seed: int = 7
    # XGBoost's own regularization (its defaults); `recpipe tune --model xgboost` searches them
    min_child_weight: float = Field(1.0, ge=0)
    subsample: float = Field(1.0, gt=0, le=1)
    colsample_bytree: float = Field(1.0, gt=0, le=1)
    reg_lambda: float = Field(1.0, ge=0)
    # true (or recpipe gbdt --tuned): the parameters `recpipe tune --model xgboost` chose for these samples
    # (<home>/_artifacts/tuning/v<samples version>/xgboost.json) replace the ones above; absent: exit 2
    use_tuned: bool = False


class TrainingSettings(Section):
    models: list[ModelName] = list(get_args(ModelName))  # every model (MODEL_NAMES)
    batch_size: PositiveInt = 1024
    shuffle_buffer: int = Field(65536, ge=0)  # 0: no shuffling
    chunk_rows: PositiveInt = 32768
    max_epochs: PositiveInt = 10
    early_stopping_patience: int = Field(2, ge=0)
    seed: int = 7
    verbose: Literal[0, 1, 2] = 2  # Keras fit's
    # true: the train steps also update the compiled AUC and PR AUC (history.json's auc / pr_auc, the solid AUC
    # lines of the report's learning curves); false: the train steps track the loss only and the AUCs are
    # measured on valid (val_auc, what early stopping watches): 0.15-0.28 s less start-up and up to 7% more
    # examples/s (DeepFM; Wide&Deep level; training/train.py loss_only_train_steps)
    train_metrics: bool = False
    # train steps per call of Keras's compiled train function: its Python loop and callbacks run once per
    # this many batches; every batch still trains once, in order (tests/test_training_inputs.py). auto: 8
    # when an epoch has >= 1,000 batches, else 1 (the longer first trace pays off on long epochs only;
    # training/train.py steps_per_execution)
    steps_per_execution: PositiveInt | Literal["auto"] = "auto"
    # true: tf.data encodes the features (lookups, hashing, buckets, normalization, GBDT leaves) in a parallel
    # map and the model core trains on encoded batches; the saved model still takes the raw features.
    # false: the whole raw-feature model runs in every train step (the path before issue 17)
    encode_in_input_pipeline: bool = True
    # with encode_in_input_pipeline: a train split that takes at most this many MiB once encoded (rows times
    # the preprocessing's bytes per row, training/dataset.encoded_row_bytes) is kept in memory as the first
    # epoch streams and encodes it; every later epoch gathers its rows in the order streaming gives them
    # (the same batches) instead of reading, converting and encoding the Parquet shards again; the valid
    # split too (cached on its first pass) when both fit; 0 (or max_epochs 1): every epoch streams
    keep_encoded_max_mb: float = Field(2048, ge=0)
    # true (or recpipe train --tuned): each model's parameters chosen by `recpipe tune` for these samples
    # (<home>/_artifacts/tuning/v<samples version>/<model>.json) replace models.<model>'s; absent: exit 2
    use_tuned: bool = False
    # true (or recpipe train --warm-start): each model starts from the weights and the preprocessing (the
    # vocabularies, buckets and normalization of its samples' fit) of its newest model on an older samples
    # version, and trains on the new samples with the same early stopping; no older model: trained cold
    warm_start: bool = False
    # valid: after training, the model's global bias moves so that its mean prediction on the valid split
    # equals valid's positive rate (the newest labelled rows: a positive rate drifting since the train rows
    # leaves the ranking alone but the probabilities miscalibrated); none: the trained bias is kept.
    # valid by default: under drift it cut miscalibration from 1.35-2.27x to 1.15-1.36x; on ml-100k and the
    # demo it moved test logloss by -0.0029..+0.0010 (bench/recalibration_bench.py); test AUC never moves
    recalibrate: Literal["none", "valid"] = "valid"


class ModelParams(Section):
    """What every model takes (training/train.py compile_model and the builders in training/models)."""

    optimizer: Optimizer = "adam"
    learning_rate: float = Field(0.001, gt=0)
    l2: float = Field(0.0, ge=0)  # L2 on the weights and embeddings
    l1: float = Field(0.0, ge=0)  # optimizer ftrl only
    ftrl_l2: float = Field(0.0, ge=0)  # optimizer ftrl only
    initial_bias: float | None = None  # None: the logit of the train positive rate


class WideParams(ModelParams):
    crosses: bool | tuple[str, ...] = False  # the spec's crosses in the wide part: all (true), none, or these
    # true: each normalize / log1p feature also enters the wide part as its train-quantile bucket (a
    # one-hot, so the linear part can bend); false: as its normalized value only
    numeric_buckets: bool = False

    @field_validator("crosses", mode="before")
    @classmethod
    def _known_crosses(cls, value: Any) -> Any:
        if isinstance(value, bool):
            return value
        if not isinstance(value, (list, tuple)) or not all(isinstance(n, str) for n in value):
            raise ValueError(f"should be true, false or a list of cross names, got {value!r}")
        from features.feature_spec import load_spec

        known = [c.name for c in load_spec().crosses]
        for name in value:
            if name not in known:
                raise ValueError(f"unknown cross {name!r} (the spec has {', '.join(known)})")
        return tuple(value)


class LRParams(WideParams):
    learning_rate: float = Field(0.002, gt=0)


class GBDTLRParams(WideParams):
    learning_rate: float = Field(0.002, gt=0)
    wide: bool = True  # add the whole wide part of `lr` (categoricals, numerics, crosses)
    raw_categoricals: bool = False  # without `wide`: add the wide categoricals only
    init_from_gbdt: bool = False  # leaf weights start at the trees' leaf values, the bias at the base margin
    leaf_l2: float = Field(0.01, ge=0)  # L2 on the leaf weights (the trees overfit their train rows first)


class EmbeddingParams(ModelParams):
    """What the models with embeddings (Wide&Deep, DeepFM) share."""

    embedding_dim: PositiveInt = 8
    hidden_units: list[PositiveInt] = [256, 128, 64]
    dropout: float = Field(0.5, ge=0, lt=1)
    # None: embedding rows start uniform(-0.05, 0.05) (keras.layers.Embedding's default); a value: N(0, it)
    # (DeepCTR starts them at N(0, 1e-4))
    embedding_init_stddev: float | None = Field(None, gt=0)


class WideDeepParams(EmbeddingParams, WideParams):
    learning_rate: float = Field(0.001, gt=0)
    embedding_dim: PositiveInt = 16


class DeepFMParams(EmbeddingParams):
    learning_rate: float = Field(0.001, gt=0)
    l2: float = Field(1e-5, ge=0)  # as DeepCTR's; with numeric_fm false +0.0036 valid AUC (bench/model_variants.py)
    # true: each numeric field scales a learned k-dim vector that joins the FM's pairwise term; false
    # (DeepCTR's DeepFM): numerics enter the first-order term and the MLP as values only
    numeric_fm: bool = False


class ModelsSettings(Section):
    lr: LRParams = LRParams()
    gbdt_lr: GBDTLRParams = GBDTLRParams()
    wide_deep: WideDeepParams = WideDeepParams()
    deepfm: DeepFMParams = DeepFMParams()

    def params(self, name: str) -> ModelParams:
        return getattr(self, name)


class EvaluationSettings(Section):
    min_auc_lift_over_popularity: float = Field(0.05, ge=-1, le=1)  # every model's test AUC >= popularity's + this


class ReplaySettings(Section):
    """recpipe replay (jobs/replay.py): per-day train-on-the-past, test-on-the-day evaluation."""

    models: list[ModelName] = ["lr", "wide_deep", "deepfm"]  # gbdt_lr needs a booster per day: not replayed
    # cold: at most this many epochs on the window's first N-1 days, stopping early on its last day
    # (training.early_stopping_patience epochs without a better AUC; the best epoch's weights kept)
    max_epochs: PositiveInt = 30
    warm_days: PositiveInt = 1  # warm start: the newest days a day's model trains on, from the day before's weights
    warm_epochs: PositiveInt = 1
    # rows per training step in replay (default training.batch_size): a day's window is a few batches of
    # the full-history size, so each epoch would be a few steps (cold fits ran into max_epochs, a warm
    # day's epoch was one step)
    batch_size: PositiveInt | None = None
    xgboost: bool = True  # the XGBoost baseline (a Spark XGBoost fit per day)

    @model_validator(mode="after")
    def _no_gbdt_lr(self):
        if "gbdt_lr" in self.models:
            raise ValueError("gbdt_lr is not replayed (it needs a booster per day): choose among lr, wide_deep, deepfm")
        return self


class ExportSettings(Section):
    root: str = "./export"  # <root>/<model>/<version>/
    auc_floor: Fraction = 0.6  # publish only if test AUC >= this
    max_auc_drop: Fraction = 0.01  # and not more than this below the published version
    keep_versions: PositiveInt = 3
    warmup_requests: int = Field(100, ge=0)
    parity_rows: PositiveInt = 2000
    parity_tolerance: float = Field(1e-6, ge=0)


class OnlineStoreSettings(Section):
    """The Redis online store (recpipe publish-features, request, skew-check)."""

    host: str = "127.0.0.1"
    port: int = Field(6379, ge=1, le=65535)
    db: int = Field(0, ge=0)
    namespace: str = Field("recpipe", pattern=r"^[A-Za-z0-9_.-]+$")  # key prefix: several stores can share a Redis
    keep_versions: PositiveInt = 3  # published versions readable by version; older fields are pruned
    socket_timeout_seconds: float = Field(5.0, gt=0)
    skew_check_rows: PositiveInt = 200  # labeled events recpipe skew-check compares by default

    def location(self):
        from features.online_store import RedisLocation

        return RedisLocation(self.host, self.port, self.db, self.namespace, self.socket_timeout_seconds)


class QualitySettings(Section):
    """Overrides of schemas/quality.yaml: quality.tables.<table>.<check> on top of the declared checks
    (null turns a check off); the merged checks are validated like the file."""

    enabled: bool = True
    tables: dict[Literal["events", "user_snapshot", "item_snapshot", "samples"], dict[str, Any] | None] = {}

    @model_validator(mode="after")
    def _overrides_apply(self):
        from features.quality import TableChecks, load_quality, merge_checks

        declared, found = load_quality(), []
        for table, override in self.tables.items():
            merged = merge_checks(declared.get(table, {}), override)
            found += [
                (f"tables.{table}.{path}" if path else f"tables.{table}", message)
                for path, message in problems(TableChecks, merged)
            ]
        if found:
            raise nested_errors(found)
        return self


class Settings(Section):
    """A whole pipeline config (conf/demo.yaml has every section)."""

    source: SourceSettings = SourceSettings()
    paths: PathsSettings = PathsSettings()
    dates: DatesSettings = DatesSettings()
    spark: SparkSettings = SparkSettings()
    delta: DeltaSettings = DeltaSettings()
    storage: StorageSettings = StorageSettings()
    ingest: IngestSettings = IngestSettings()
    snapshot: SnapshotSettings = SnapshotSettings()
    samples: SamplesSettings = SamplesSettings()
    gbdt: GbdtSettings = GbdtSettings()
    training: TrainingSettings = TrainingSettings()
    models: ModelsSettings = ModelsSettings()
    evaluation: EvaluationSettings = EvaluationSettings()
    export: ExportSettings = ExportSettings()
    replay: ReplaySettings = ReplaySettings()
    quality: QualitySettings = QualitySettings()
    online_store: OnlineStoreSettings = OnlineStoreSettings()
    _source: str = PrivateAttr("config")  # the file it came from, for messages

    @property
    def source_file(self) -> str:
        return self._source

    def missing(self, dotted_keys: tuple[str, ...]) -> list[str]:
        """The keys among `dotted_keys` (e.g. 'paths.warehouse') that are not set."""

        def value(key: str) -> Any:
            node: Any = self
            for part in key.split("."):
                node = getattr(node, part)
            return node

        return [key for key in dotted_keys if value(key) is None]

    def checks_config(self) -> dict:
        """The config as features.quality.table_checks reads it."""
        return {"quality": self.quality.model_dump()}

    @property
    def rebuild_days(self) -> int:
        """Days before the requested ones a snapshot run rebuilds (late data): snapshot.rebuild_days,
        by default the lateness in days."""
        return self.ingest.lateness_days if self.snapshot.rebuild_days is None else self.snapshot.rebuild_days

    @property
    def redelivery_horizon_days(self) -> int | None:
        """Days around a drop searched for redelivered event ids; None: no lookup (redelivery_check false)."""
        from features.redelivery import default_horizon_days

        if not self.ingest.redelivery_check:
            return None
        horizon = self.ingest.redelivery_horizon_days
        return default_horizon_days(self.ingest.allowed_lateness_hours) if horizon is None else horizon


def as_settings(config: Settings | Mapping[str, Any], source: str = "config") -> Settings:
    """The validated settings of `config` (a Settings passes through; a mapping, e.g. a test's dict,
    is validated: a problem is a ConfigError, one line naming the key path)."""
    if isinstance(config, Settings):
        return config
    from jobs.config import ConfigError

    settings = validate(Settings, dict(config), source, ConfigError)
    settings._source = source
    return settings


def as_section(model: type[SECTION], section: SECTION | Mapping[str, Any], path: str) -> SECTION:
    """One validated section (e.g. SparkSettings from a {master, conf} mapping); errors name `path`."""
    if isinstance(section, model):
        return section
    return getattr(as_settings({path: dict(section)}), path)


def resolve_models(config: "Settings | dict", requested: str | None) -> list[str]:
    """The models a command works on: 'all' or nothing (the configured training.models), one name, or a
    comma-separated list; an unknown name is the user's mistake (exit 2)."""
    if requested in (None, "all"):
        return list(as_settings(config).training.models)
    names = [n.strip() for n in requested.split(",") if n.strip()]
    unknown = [n for n in names if n not in MODEL_NAMES]
    if unknown or not names:
        raise PipelineInputError(
            f"unknown model '{(unknown or [requested])[0]}': choose one of {', '.join(MODEL_NAMES)} or all"
        )
    return names
