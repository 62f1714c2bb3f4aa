"""The pipeline config and the schema files as typed models (jobs/settings.py, features/validation.py):
unknown keys and bad values are one-line errors naming the key path (and the closest valid name), the
defaults are conf/demo.yaml's, a configured 0 stays 0, and the CLI exits 2 without a traceback.
No Spark session needed."""

from __future__ import annotations

import ast
import datetime as dt
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from features.errors import PipelineInputError, SpecError
from features.feature_spec import load_spec
from features.quality import load_quality
from features.schemas import load_schema
from jobs.cli import main
from jobs.config import ConfigError, load_config
from jobs import settings
from jobs.settings import MODEL_NAMES, Settings, as_settings

REPO = Path(__file__).resolve().parents[1]
DEMO = yaml.safe_load((REPO / "conf" / "demo.yaml").read_text())


def _error(config: dict) -> str:
    with pytest.raises(ConfigError) as error:
        as_settings(config)
    message = str(error.value)
    assert "\n" not in message
    return message


def _config_file(tmp_path: Path, change) -> Path:
    config = yaml.safe_load((REPO / "conf" / "demo.yaml").read_text())
    change(config)
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


# ---- unknown keys, enumerations, ranges ---------------------------------------------------------


def test_a_typo_is_one_line_naming_the_key_path_and_the_closest_valid_name(tmp_path):
    assert _error({"samples": {"atribution_window_minutes": 30}}) == (
        "config: samples.atribution_window_minutes: unknown key (did you mean attribution_window_minutes?)"
    )
    assert _error({"trainig": {}}) == "config: trainig: unknown key (did you mean training?)"
    assert _error({"models": {"wide_deep": {"dropuot": 0.2}}}) == (
        "config: models.wide_deep.dropuot: unknown key (did you mean dropout?)"
    )
    assert _error({"models": {"xgboost": {}}}) == (
        "config: models.xgboost: unknown key (allowed: lr, gbdt_lr, wide_deep, deepfm)"
    )
    path = _config_file(tmp_path, lambda c: c["samples"].update(atribution_window_minutes=5))
    with pytest.raises(ConfigError) as error:
        load_config(path)
    assert str(error.value) == (
        f"config {path}: samples.atribution_window_minutes: unknown key (did you mean attribution_window_minutes?)"
    )


@pytest.mark.parametrize(
    "config, message",
    [
        (
            {"samples": {"kind": "clik"}},
            "samples.kind: unknown value 'clik' (did you mean click? allowed: click, rating)",
        ),
        (
            {"samples": {"negative_sampling": "random"}},
            "samples.negative_sampling: unknown value 'random' (allowed: popularity, uniform)",
        ),
        (
            {"samples": {"weight": "dwel"}},
            "samples.weight: unknown value 'dwel' (did you mean dwell? allowed: none, dwell)",
        ),
        (
            {"delta": {"backend": "delta"}},
            "delta.backend: unknown value 'delta' (did you mean delta-rs? allowed: auto, delta-rs, delta-spark)",
        ),
        ({"source": {"kind": "csv"}}, "source.kind: unknown value 'csv' (allowed: synthetic, movielens, raw)"),
        (
            {"models": {"deepfm": {"optimizer": "rmsprop"}}},
            "models.deepfm.optimizer: unknown value 'rmsprop' (allowed: adam, adagrad, ftrl, sgd)",
        ),
        (
            {"training": {"models": ["lr", "deep_fm"]}},
            "training.models[1]: unknown value 'deep_fm' "
            "(did you mean deepfm? allowed: lr, gbdt_lr, wide_deep, deepfm)",
        ),
        ({"quality": {"tables": {"event": {}}}}, "quality.tables.event: unknown key (did you mean events?)"),
        (
            {"quality": {"tables": {"events": {"row_count_change": {"severity": "fatal"}}}}},
            "quality.tables.events.row_count_change.severity: unknown value 'fatal' (allowed: error, warn)",
        ),
    ],
)
def test_a_bad_enumeration_names_the_allowed_values(config, message):
    assert _error(config) == f"config: {message}"


@pytest.mark.parametrize(
    "config, message",
    [
        (
            {"ingest": {"allowed_lateness_hours": -1}},
            "ingest.allowed_lateness_hours: should be greater than or equal to 0, got -1",
        ),
        (
            {"ingest": {"redelivery_horizon_days": -2}},
            "ingest.redelivery_horizon_days: should be greater than or equal to 0, got -2",
        ),
        (
            {"samples": {"negatives_per_positive": -1}},
            "samples.negatives_per_positive: should be greater than or equal to 0, got -1",
        ),
        (
            {"samples": {"split_quantiles": [0.9, 0.8]}},
            "samples.split_quantiles: must be increasing and inside (0, 1), got [0.9, 0.8]",
        ),
        (
            {"samples": {"split_quantiles": [0.8, 1.0]}},
            "samples.split_quantiles: must be increasing and inside (0, 1), got [0.8, 1.0]",
        ),
        (
            {"samples": {"attribution_window_minutes": "half an hour"}},
            "samples.attribution_window_minutes: should be a valid integer, unable to parse string as an integer, got 'half an hour'",
        ),
        ({"models": {"wide_deep": {"dropout": 1.5}}}, "models.wide_deep.dropout: should be less than 1, got 1.5"),
        (
            {"models": {"lr": {"crosses": ["no_such_cross"]}}},
            "models.lr.crosses: unknown cross 'no_such_cross' (the spec has ",
        ),
        ({"export": {"auc_floor": 1.2}}, "export.auc_floor: should be less than or equal to 1, got 1.2"),
        ({"ingest": {"value_ranges": {"rating": [10, 1]}}}, "ingest.value_ranges.rating: min 10 is above max 1"),
        ({"source": {"kind": "movielens"}}, "source.movielens_path: missing (required when source.kind is movielens)"),
        (
            {"quality": {"tables": {"events": {"null_rate": {"columns": {"device": 2}}}}}},
            "quality.tables.events.null_rate.columns.device: should be less than or equal to 1, got 2",
        ),
        (
            {"spark": {"conf": {"spark.sql.session.timeZone": "Asia/Tokyo"}}},
            "spark.conf: spark.sql.session.timeZone is 'Asia/Tokyo' (config or --conf): recpipe's day boundaries are UTC",
        ),
    ],
)
def test_types_and_ranges_are_checked(config, message):
    assert _error(config).startswith(f"config: {message}")


def test_several_problems_stay_on_one_line():
    message = _error({"samples": {"kind": "x", "seed": "y"}, "gbdt": {"max_depth": 0}, "export": {"rooot": "z"}})
    assert message.startswith("config: samples.kind: unknown value 'x'")
    assert message.endswith("(and 1 more)") and message.count("; ") == 2


# ---- defaults -----------------------------------------------------------------------------------


def _leaves(node, prefix=""):
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _leaves(value, f"{prefix}.{key}" if prefix else str(key))
    else:
        yield prefix, node


def _plain(value):
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value.isoformat() if isinstance(value, dt.date) else value


def test_the_defaults_are_demo_yaml_values_where_demo_sets_them():
    defaults = dict(_leaves(Settings().model_dump()))
    # required keys have no default; spark.app_name and spark.conf name and size a deployment
    not_defaulted = {
        "paths.raw",
        "paths.warehouse",
        "dates.start",
        "dates.end",
        "spark.master",
        "source.kind",
        "spark.app_name",
    }
    compared = 0
    for key, value in _leaves(DEMO):
        if key in not_defaulted or key.startswith("spark.conf."):
            continue
        assert key in defaults, f"conf/demo.yaml sets {key}, which the settings do not know"
        assert _plain(defaults[key]) == _plain(value), f"{key}: default {defaults[key]!r}, conf/demo.yaml {value!r}"
        compared += 1
    assert compared >= 55  # every section of demo.yaml but paths, dates and the deployment keys
    omitted = Settings()  # what the disagreements were: a config that leaves these out gets demo's values
    assert (omitted.export.auc_floor, omitted.models.wide_deep.dropout, omitted.models.deepfm.dropout) == (
        0.6,
        0.5,
        0.5,
    )
    assert (omitted.models.lr.crosses, omitted.models.gbdt_lr.init_from_gbdt, omitted.models.gbdt_lr.leaf_l2) == (
        False,
        False,
        0.01,
    )
    assert (omitted.models.lr.learning_rate, omitted.models.wide_deep.learning_rate) == (0.002, 0.001)


def test_a_configured_zero_stays_zero():
    settings = as_settings(
        {
            "evaluation": {"min_auc_lift_over_popularity": 0},
            "export": {"auc_floor": 0},
            "ingest": {"allowed_lateness_hours": 0, "redelivery_horizon_days": 0},
            "snapshot": {"rebuild_days": 0},
            "samples": {"attribution_window_minutes": 0},
            "training": {"early_stopping_patience": 0, "shuffle_buffer": 0},
            "models": {"wide_deep": {"dropout": 0}, "gbdt_lr": {"leaf_l2": 0}},
        }
    )
    assert settings.evaluation.min_auc_lift_over_popularity == 0
    assert settings.export.auc_floor == 0
    assert settings.ingest.lateness_days == 0 and settings.rebuild_days == 0 and settings.redelivery_horizon_days == 0
    assert settings.samples.attribution_window_minutes == 0
    assert settings.training.early_stopping_patience == 0 and settings.training.shuffle_buffer == 0
    assert settings.models.wide_deep.dropout == 0 and settings.models.gbdt_lr.leaf_l2 == 0
    from training.publish_gate import gate

    assert gate(0.3, None, settings.export)[0]  # a floor of 0 lets any AUC through


def test_derived_defaults_follow_the_lateness():
    settings = as_settings({"ingest": {"allowed_lateness_hours": 72}})
    assert settings.rebuild_days == 3 and settings.redelivery_horizon_days == 3 + 7
    assert as_settings({"ingest": {"redelivery_check": False}}).redelivery_horizon_days is None


def test_file_artefacts_live_in_paths_artifacts_or_a_local_warehouse():
    paths = as_settings({"paths": {"warehouse": "/data/wh"}}).paths
    assert paths.artifacts_home() == "/data/wh" and paths.artifacts_home("file:///other") == "/other"
    mounted = as_settings({"paths": {"warehouse": "s3a://bucket/wh", "artifacts": "/mnt/recpipe"}}).paths
    assert mounted.artifacts_home() == "/mnt/recpipe" and mounted.artifacts_home("s3://bucket/wh") == "/mnt/recpipe"
    bare = as_settings({"paths": {"warehouse": "s3a://bucket/wh"}}).paths
    with pytest.raises(
        ConfigError, match=r"^paths.artifacts is not set and the warehouse s3a://bucket/wh is an object"
    ):
        bare.artifacts_home()
    remote = as_settings({"paths": {"warehouse": "/data/wh", "artifacts": "gs://bucket/a"}}).paths
    with pytest.raises(ConfigError, match=r"^paths.artifacts: gs://bucket/a is an object store"):
        remote.artifacts_home()


def test_no_call_site_reads_the_config_with_its_own_default():
    offenders = []
    for folder in ("jobs", "features", "training", "airflow_dags", "bench"):
        for path in (REPO / folder).rglob("*.py"):
            text = path.read_text()
            if "get_key(" in text or "_DEFAULTS = {" in text:
                offenders.append(str(path.relative_to(REPO)))
    assert offenders == []


def test_model_and_optimizer_names_are_the_ones_training_implements():
    def literal(path: str, name: str):
        for node in ast.walk(ast.parse((REPO / path).read_text())):
            if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == name for t in node.targets):
                return (
                    ast.literal_eval(node.value)
                    if not isinstance(node.value, ast.Dict)
                    else [ast.literal_eval(k) for k in node.value.keys]
                )
        raise AssertionError(f"{name} not found in {path}")

    from jobs.settings import ModelParams

    assert list(MODEL_NAMES) == literal("training/models/__init__.py", "BUILDERS")
    assert set(ModelParams.model_fields["optimizer"].annotation.__args__) == set(
        literal("training/train.py", "OPTIMIZERS")
    )


# ---- the config files and the loader ------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(p.name for p in (REPO / "conf").glob("*.yaml")))
def test_every_shipped_config_validates(name):
    settings = load_config(REPO / "conf" / name)
    assert settings.paths.warehouse and settings.source.kind and settings.dates.start <= settings.dates.end


def test_job_functions_validate_a_plain_dict_before_any_work():
    from jobs.build_snapshot import build_snapshots
    from jobs.ingest import ingest

    with pytest.raises(
        ConfigError,
        match=r"^config: ingest\.alowed_lateness_hours: unknown key \(did you mean allowed_lateness_hours\?\)$",
    ):
        ingest(None, None, {"paths": {"raw": "r", "warehouse": "w"}, "ingest": {"alowed_lateness_hours": 1}}, [])
    with pytest.raises(ConfigError, match=r"^config: snapshot\.rebuild_days: should be greater than or equal to 0"):
        build_snapshots(None, None, {"snapshot": {"rebuild_days": -1}}, [])
    settings = as_settings({"paths": {"warehouse": "w"}, "samples": {"kind": "rating"}})
    assert as_settings(settings) is settings and settings.samples.kind == "rating"


def test_overrides_keep_spark_setting_names_and_flag_dates_are_checked(tmp_path):
    settings = load_config(
        None, {"spark.conf.spark.recpipe.marker": "on", "spark.master": "local[1]", "dates.start": "2026-01-02"}
    )
    assert settings.spark.conf["spark.recpipe.marker"] == "on" and settings.spark.master == "local[1]"
    assert settings.dates.start == dt.date(2026, 1, 2)
    with pytest.raises(
        ConfigError, match=r"spark\.sql\.session\.timeZone is 'America/New_York'.*day boundaries are UTC"
    ):
        load_config(None, {"spark.conf.spark.sql.session.timeZone": "America/New_York"})
    with pytest.raises(Exception, match=r"^invalid start date '2026-02-30': use YYYY-MM-DD$"):
        load_config(None, {"dates.start": "2026-02-30"})
    broken = _config_file(tmp_path, lambda c: c["paths"].pop("warehouse"))
    with pytest.raises(ConfigError, match="is missing the key 'paths.warehouse'"):
        load_config(broken)


# ---- schema files -------------------------------------------------------------------------------


def _spec_file(tmp_path: Path, change) -> Path:
    doc = yaml.safe_load((REPO / "schemas" / "features.yaml").read_text())
    change(doc)
    path = tmp_path / "features.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def _feature(doc: dict, name: str) -> dict:
    return next(f for f in doc["features"] if f["name"] == name)


@pytest.mark.parametrize(
    "change, message",
    [
        (
            lambda d: _feature(d, "user_age").update(kind="attr"),
            "features.user_age.kind: unknown value 'attr' (did you mean attribute? allowed: event_column, ",
        ),
        (
            lambda d: _feature(d, "user_age").update(transfrom="quantile_buckets"),
            "features.user_age.transfrom: unknown key (did you mean transform?)",
        ),
        (
            lambda d: _feature(d, "user_age").update(transform="bucketize"),
            "features.user_age.transform: unknown value 'bucketize' (allowed: quantile_buckets, normalize, log1p, vocabulary, hashing)",
        ),
        (
            lambda d: _feature(d, "user_age").update(roles=["wide", "dep"]),
            "features.user_age.roles[1]: unknown value 'dep' (did you mean deep? allowed: wide, deep, fm, gbdt)",
        ),
        (
            lambda d: _feature(d, "user_age").update(dtype="float"),
            "features.user_age.dtype: unknown value 'float' (allowed: int, long, ",
        ),
        (
            lambda d: _feature(d, "user_age").update(entity="users"),
            "features.user_age.entity: unknown entity 'users' (entities: context, user, item, user_category)",
        ),
        (
            lambda d: _feature(d, "context_hour").update(kind="window_count"),
            "features.context_hour.kind: window_count does not fit entity context (use one of event_column, event_hour, event_weekday)",
        ),
        (
            lambda d: d["transforms"]["hashing"].update(size=10),
            "transforms.hashing.size: unknown key (allowed: num_bins)",
        ),
        (lambda d: d.update(windows_days=[1, 0]), "windows_days[1]: should be greater than or equal to 1, got 0"),
        (
            lambda d: d["crosses"][0].update(features=["context_user_id", "user_first_active_date"]),
            "crosses[0].features: cross context_user_id_x_user_first_active_date needs model features with a transform",
        ),
    ],
)
def test_a_bad_feature_spec_names_the_file_and_the_key(tmp_path, change, message):
    path = _spec_file(tmp_path, change)
    with pytest.raises(SpecError) as error:
        load_spec(path)
    assert str(error.value).startswith(f"{path}: {message}") and "\n" not in str(error.value)


def test_the_shipped_spec_and_schemas_validate_and_a_bad_quality_or_table_schema_names_file_and_key(tmp_path):
    assert load_spec().features and load_quality()["events"]["quarantine_rate"]["max"] == 0.02
    assert {load_schema(t).name for t in ("events", "users", "items")} == {"events", "users", "items"}
    quality = yaml.safe_load((REPO / "schemas" / "quality.yaml").read_text())
    quality["tables"]["events"]["null_rates"] = quality["tables"]["events"].pop("null_rate")
    quality["tables"]["item_snapshot"]["psi"]["severity"] = "critical"
    (tmp_path / "quality.yaml").write_text(yaml.safe_dump(quality))
    with pytest.raises(SpecError) as error:
        load_quality(tmp_path / "quality.yaml")
    assert str(error.value) == (
        f"{tmp_path / 'quality.yaml'}: tables.events.null_rates: unknown key (did you mean "
        f"null_rate?); tables.item_snapshot.psi.severity: unknown value 'critical' "
        f"(allowed: error, warn)"
    )
    events = yaml.safe_load((REPO / "schemas" / "events.yaml").read_text())
    next(c for c in events["columns"] if c["name"] == "position")["tpye"] = "int"
    (tmp_path / "events.yaml").write_text(yaml.safe_dump(events))
    with pytest.raises(SpecError, match=r"events\.yaml: columns\.position\.tpye: unknown key \(did you mean type\?\)$"):
        load_schema("events", tmp_path / "events.yaml")


# ---- the CLI ------------------------------------------------------------------------------------


def test_the_cli_prints_one_line_and_exits_2_for_a_config_error(tmp_path, capsys):
    path = _config_file(tmp_path, lambda c: c["samples"].update(atribution_window_minutes=30))
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    result = subprocess.run(
        [sys.executable, "-m", "jobs.cli", "ingest", "--config", str(path), "--date", "2026-01-01"],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env,
        timeout=300,
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        f"recpipe ingest: error: config {path}: samples.atribution_window_minutes: unknown key "
        f"(did you mean attribution_window_minutes?)"
    )
    assert [
        line for line in result.stderr.splitlines() if line.startswith("recpipe")
    ] == result.stderr.strip().splitlines()[-1:]
    bad_enum = _config_file(tmp_path, lambda c: c["delta"].update(backend="delta_rs"))
    assert main(["tables", "--config", str(bad_enum)]) == 2
    err = capsys.readouterr().err
    assert err == (
        f"recpipe tables: error: config {bad_enum}: delta.backend: unknown value 'delta_rs' "
        f"(did you mean delta-rs? allowed: auto, delta-rs, delta-spark)\n"
    )


def test_one_model_registry_and_one_resolver_for_train_and_export():
    from training.models import BUILDERS

    assert tuple(BUILDERS) == settings.MODEL_NAMES == ("lr", "gbdt_lr", "wide_deep", "deepfm")
    config = {"training": {"models": ["deepfm", "lr"]}}
    assert settings.resolve_models(config, None) == settings.resolve_models(config, "all") == ["deepfm", "lr"]
    assert settings.resolve_models(config, "wide_deep") == ["wide_deep"]
    assert settings.resolve_models(config, " lr, gbdt_lr ") == ["lr", "gbdt_lr"]
    for bad in ("deepfn", "lr,xgb", ","):
        with pytest.raises(
            PipelineInputError, match="unknown model .*choose one of lr, gbdt_lr, wide_deep, deepfm or all"
        ):
            settings.resolve_models(config, bad)
