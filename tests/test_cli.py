"""CLI mistakes: one line on stderr, exit code 2, no traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from jobs.cli import main

REPO = Path(__file__).resolve().parents[1]


def _config(tmp_path, **changes):
    config = yaml.safe_load((REPO / "conf" / "demo.yaml").read_text())
    config["paths"] = {"raw": str(tmp_path / "raw"), "warehouse": str(tmp_path / "warehouse")}
    config["spark"]["master"] = "local[2]"
    for key, value in changes.items():
        config[key] = value
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.mark.parametrize(
    "argv, message",
    [
        (["ingest", "--date", "2026-13-01"], "invalid date '2026-13-01': use YYYY-MM-DD"),
        (
            ["ingest", "--start", "2026-01-05", "--end", "2026-01-01"],
            "end date 2026-01-01 is before start date 2026-01-05",
        ),
        (["ingest", "--date", "2026-01-01", "--start", "2026-01-01"], "give either --date or --start/--end"),
        (["ingest", "--conf", "novalue"], "--conf expects KEY=VALUE"),
        (["gbdt", "--samples-version", "-1"], "expected a version number (0, 1, ...), got '-1'"),
        (["snapshot", "--date", "yesterday"], "invalid date 'yesterday': use YYYY-MM-DD"),
        (
            ["run", "--start", "2026-01-05", "--end", "2026-01-01"],
            "end date 2026-01-01 is before start date 2026-01-05",
        ),
        (["train", "--model", "xgb"], "unknown model 'xgb'"),
        (["export", "--model", "lr,nope"], "unknown model 'nope'"),
        (["train", "--model", "lr"], "no samples built yet under"),
        (["gbdt", "--samples-version", "7"], "samples version 7 has no manifest at"),
        (["history", "--limit", "-1", "events"], "argument --limit: expected a positive whole number, got '-1'"),
        (["sql", "--as-of-timestamp", "yesterday", "SELECT 1"], "invalid timestamp 'yesterday': use ISO 8601"),
        (["sql", "--as-of-version", "3", "--as-of-timestamp", "2026-01-01", "SELECT 1"], "give either --as-of-version"),
    ],
)
def test_bad_arguments_exit_2_with_one_line(tmp_path, capsys, argv, message):
    assert main([*argv, "--config", str(_config(tmp_path))]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


def test_predict_names_what_is_missing(tmp_path, capsys):
    assert main(["predict", "--model-dir", str(tmp_path / "deepfm" / "1"), "--request", str(tmp_path / "r.json")]) == 2
    assert f"no SavedModel at {tmp_path / 'deepfm' / '1'}" in capsys.readouterr().err


def test_missing_config_file_and_missing_key(tmp_path, capsys):
    assert main(["ingest", "--config", str(tmp_path / "nope.yaml"), "--date", "2026-01-01"]) == 2
    assert f"config file not found: {tmp_path / 'nope.yaml'}" in capsys.readouterr().err
    broken = yaml.safe_load(_config(tmp_path).read_text())
    del broken["paths"]["warehouse"]
    (tmp_path / "broken.yaml").write_text(yaml.safe_dump(broken))
    assert main(["ingest", "--config", str(tmp_path / "broken.yaml"), "--date", "2026-01-01"]) == 2
    assert "is missing the key 'paths.warehouse'" in capsys.readouterr().err


def test_missing_drop_exits_2_naming_the_path(spark, tmp_path, capsys):
    assert main(["ingest", "--config", str(_config(tmp_path)), "--date", "2026-01-01"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.endswith("(use --allow-missing to skip missing days)")
    assert str(tmp_path / "raw" / "events" / "dt=2026-01-01") in err


def test_snapshot_before_any_ingest_exits_2(spark, tmp_path, capsys):
    assert main(["snapshot", "--config", str(_config(tmp_path)), "--date", "2026-01-01"]) == 2
    assert "no events ingested yet" in capsys.readouterr().err


def test_missing_movielens_file_names_it(tmp_path, capsys):
    (tmp_path / "u.data").write_text("1\t1\t5\t881250949\n")
    assert main(["import-movielens", str(tmp_path), "--out", str(tmp_path / "raw")]) == 2
    assert "u.item" in capsys.readouterr().err


def test_console_script_usage_error_has_no_traceback(tmp_path):
    result = subprocess.run(
        [
            str(Path(sys.executable).parent / "recpipe"),
            "ingest",
            "--config",
            str(_config(tmp_path)),
            "--start",
            "2026-02-30",
        ],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.strip() == "recpipe ingest: error: invalid start date '2026-02-30': use YYYY-MM-DD"
    unknown = subprocess.run(
        [str(Path(sys.executable).parent / "recpipe"), "frobnicate"], capture_output=True, text=True
    )
    assert unknown.returncode == 2 and "invalid choice" in unknown.stderr


def test_conf_flags_reach_spark_under_their_own_name_and_the_time_zone_stays_utc(spark, tmp_path):
    from jobs.config import ConfigError, load_config
    from jobs.spark_session import build_session

    config = load_config(
        None, {"spark.conf.spark.recpipe.test.marker": "set-by-flag", "spark.conf.spark.sql.session.timeZone": "UTC"}
    )
    assert config.spark.conf["spark.recpipe.test.marker"] == "set-by-flag"
    assert "spark" not in config.spark.conf  # not split into a nested dict at the dots
    flagged = {"spark.recpipe.test.marker": config.spark.conf["spark.recpipe.test.marker"]}
    session = build_session({"conf": flagged})  # the suite's session: getOrCreate applies the setting to it
    assert session.conf.get("spark.recpipe.test.marker") == "set-by-flag"
    with pytest.raises(ConfigError, match=r"spark.sql.session.timeZone is 'America/New_York'.*day boundaries are UTC"):
        load_config(None, {"spark.conf.spark.sql.session.timeZone": "America/New_York"})
    shifted = tmp_path / "shifted.yaml"
    shifted.write_text(
        (REPO / "conf" / "demo.yaml")
        .read_text()
        .replace(
            '    spark.ui.enabled: "false"', '    spark.ui.enabled: "false"\n    spark.sql.session.timeZone: Asia/Tokyo'
        )
    )
    assert main(["tables", "--config", str(shifted)]) == 2


@pytest.mark.parametrize(
    "backend, conf, without_session",
    [
        ("delta-rs", {}, True),
        ("auto", {}, True),
        ("auto", {"spark.sql.extensions": "io.delta.sql.DeltaSparkSessionExtension"}, False),
        ("delta-spark", {}, False),
    ],
)
def test_gbdt_starts_spark_only_when_the_tables_may_need_it(backend, conf, without_session):
    """recpipe gbdt's lazy session: delta-rs tables are known without a JVM; auto with the io.delta
    extension configured, or delta-spark, needs the session to find the jars."""
    from jobs.cli import _delta_rs_without_session
    from jobs.settings import SparkSettings

    assert _delta_rs_without_session(backend, SparkSettings(master="local[1]", conf=conf)) is without_session
