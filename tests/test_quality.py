"""Data quality checks (schemas/quality.yaml): the check arithmetic on small frames, and the gate:
a failing check is recorded in the `quality` table, stops the job with exit code 4, blocks samples
from those days, and a clean rerun clears it."""

from __future__ import annotations

import datetime as dt
import math

import numpy as np
import pytest
import yaml
from chispa import assert_approx_df_equality

from features.quality import psi_by_day, run_checks, table_checks
from features.tables import open_tables
from jobs.cli import main

D1, D2, D3 = dt.date(2026, 3, 1), dt.date(2026, 3, 2), dt.date(2026, 3, 3)


def _psi(expected_shares, actual_shares) -> float:
    e = np.maximum(np.asarray(expected_shares, float), 1e-4)
    a = np.maximum(np.asarray(actual_shares, float), 1e-4)
    return float(np.sum((a - e) * np.log(a / e)))


def test_psi_matches_the_formula_on_decile_buckets_of_the_day_before(spark):
    # day 1: values 0..99 (deciles 9.9, 19.8, ...); day 2: the same; day 3: half of the rows moved to the top decile
    day3 = list(range(50)) + [95] * 50
    rows = (
        [(D1, float(v)) for v in range(100)]
        + [(D2, float(v)) for v in range(100)]
        + [(D3, float(v)) for v in day3]
        + [(D3, None)] * 10
    )
    frame = spark.createDataFrame(rows, "day date, x double")
    result = psi_by_day(frame, "day", ["x"], buckets=10).orderBy("day")
    edges = np.percentile(np.arange(100), np.arange(10, 100, 10), method="inverted_cdf")
    counts = np.bincount(np.searchsorted(edges, day3, side="left"), minlength=10)
    shares = np.append(counts / 110, 10 / 110)  # + the NULL bucket, empty on day 2
    expected = spark.createDataFrame(
        [(D2, "x", 0.0, 100, 100), (D3, "x", _psi([0.1] * 10 + [0.0], shares), 110, 100)],
        "day date, feature string, psi double, rows bigint, baseline_rows bigint",
    )
    assert_approx_df_equality(result, expected, precision=1e-6, ignore_nullable=True)


def test_checks_pass_fail_and_skip_as_declared(spark):
    checks = {
        "row_count_change": {"min_ratio": 0.5, "max_ratio": 2.0, "min_previous_rows": 3},
        "quarantine_rate": {"max": 0.1},
        "null_rate": {"columns": {"device": 0.25}},
        "range": {"columns": {"position": [0, 10]}, "max_violation_rate": 0.0},
    }
    rows = (
        [(D1, "mobile", 1)] * 4
        + [(D2, "mobile", 2), (D2, None, 3)]  # D2: half the rows, one NULL device
        + [(D3, "tv", 11)] * 4
    )  # D3: every position out of range
    frame = spark.createDataFrame(rows, "drop_date date, device string, position int")
    results = run_checks("events", checks, frame, "drop_date", [D1, D2, D3], previous_rows=None, quarantined={D3: 2})
    status = {(r.check_date, r.check, r.column): (r.status, r.value) for r in results}
    assert status[(D1, "row_count_change", "")] == ("skip", None)  # no day before
    assert status[(D2, "row_count_change", "")] == ("pass", 0.5)
    assert status[(D3, "row_count_change", "")] == ("skip", None)  # 2 rows before < min_previous_rows
    assert status[(D2, "null_rate", "device")] == ("fail", 0.5)
    assert status[(D1, "null_rate", "device")] == ("pass", 0.0)
    assert status[(D3, "range", "position")] == ("fail", 1.0)
    assert status[(D3, "quarantine_rate", "")] == ("fail", pytest.approx(2 / 6))
    assert all(r.severity == "error" for r in results)
    assert {r.blocking for r in results if r.status == "fail"} == {True}


def test_config_overrides_the_declared_checks():
    declared = table_checks("events", {})
    assert declared["row_count_change"]["severity"] == "error"
    relaxed = table_checks("events", {"quality": {"tables": {"events": {"row_count_change": {"severity": "warn"}}}}})
    assert relaxed["row_count_change"] == {**declared["row_count_change"], "severity": "warn"}
    assert "null_rate" not in table_checks("events", {"quality": {"tables": {"events": {"null_rate": None}}}})
    assert table_checks("events", {"quality": {"enabled": False}}) == {}


@pytest.fixture
def small_pipeline(tmp_path):
    config = yaml.safe_load(open("conf/demo.yaml"))
    config["paths"] = {"raw": str(tmp_path / "raw"), "warehouse": str(tmp_path / "warehouse")}
    config["dates"] = {"start": str(D1), "end": str(D3)}
    path = tmp_path / "quality.yaml"
    path.write_text(yaml.safe_dump(config))
    assert (
        main(
            [
                "generate-logs",
                "--out",
                str(tmp_path / "raw"),
                "--start-date",
                str(D1),
                "--days",
                "3",
                "--users",
                "250",
                "--items",
                "40",
                "--seed",
                "4",
            ]
        )
        == 0
    )
    return path, tmp_path


def _drop_file(root, day):
    return next((root / "raw" / "events" / f"dt={day}").glob("*.jsonl"))


def test_a_failing_check_stops_the_job_blocks_samples_and_a_clean_rerun_clears_it(spark, small_pipeline, capsys):
    path, root = small_pipeline
    drop = _drop_file(root, D3)
    original = drop.read_text()
    lines = original.splitlines()
    drop.write_text("\n".join(lines[: len(lines) // 3]) + "\n")  # two thirds of day 3's events lost upstream
    assert main(["ingest", "--config", str(path)]) == 4
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "quality check failed: events 2026-03-03 row_count_change" in err[0], err
    tables = open_tables(spark, str(root / "warehouse"), "delta-rs")
    failed = tables.read("quality").where("status = 'fail'").collect()
    assert [(r["table_name"], r["check_date"], r["check"], r["job"]) for r in failed] == [
        ("events", D3, "row_count_change", "ingest")
    ]
    assert failed[0]["value"] == pytest.approx(1 / 3, abs=0.02)

    assert main(["snapshot", "--config", str(path)]) == 0  # snapshots of good data may be built
    capsys.readouterr()
    assert main(["samples", "--config", str(path), "--start", str(D2), "--end", str(D2)]) == 4
    assert (
        "samples refused: events 2026-03-03: failed row_count_change (258 rows vs 816 the day before)"
        in capsys.readouterr().err
    )
    assert not tables.exists("samples")

    drop.write_text(original)  # the drop is redelivered complete
    assert main(["ingest", "--config", str(path), "--date", str(D3)]) == 0
    capsys.readouterr()  # D3's drop can hold late events of D1 and D2: their snapshots are stale until rebuilt
    assert main(["samples", "--config", str(path), "--start", str(D2), "--end", str(D2)]) == 2
    assert "the snapshots of 2026-03-01 are stale" in capsys.readouterr().err
    assert main(["snapshot", "--config", str(path), "--date", str(D3)]) == 0  # rebuilds D1..D3
    quality = tables.read("quality")
    assert quality.where("status = 'fail'").count() == 0
    per_check = quality.groupBy("check_date", "table_name", "check", "column").count()
    assert per_check.where("count > 1").count() == 0  # the rerun replaced its rows, kept the others
    assert quality.where(f"table_name = 'user_snapshot' AND check_date = date'{D3}'").count() > 0
    assert main(["samples", "--config", str(path), "--start", str(D2), "--end", str(D2)]) == 0
    assert tables.read("quality").where("table_name = 'samples' AND check = 'mean' AND status = 'pass'").count() == 1

    config = yaml.safe_load(path.read_text())  # a label rate far from the declared range: samples are not published
    config["quality"] = {"tables": {"samples": {"mean": {"columns": {"label": [0.5, 0.95]}}}}}
    path.write_text(yaml.safe_dump(config))
    published = tables.version("samples")
    capsys.readouterr()
    assert main(["samples", "--config", str(path), "--start", str(D2), "--end", str(D2)]) == 4
    assert "samples 2026-03-02 mean label" in capsys.readouterr().err
    assert tables.version("samples") == published


def test_garbage_lines_fail_the_quarantine_rate_and_the_override_lets_it_pass(spark, small_pipeline, capsys):
    path, root = small_pipeline
    drop = _drop_file(root, D2)
    lines = drop.read_text().splitlines()
    drop.write_text("\n".join(line if i % 10 else line[: len(line) // 2] for i, line in enumerate(lines)) + "\n")
    assert main(["ingest", "--config", str(path), "--start", str(D1), "--end", str(D2)]) == 4
    assert "events 2026-03-02 quarantine_rate = 0.1" in capsys.readouterr().err
    tables = open_tables(spark, str(root / "warehouse"), "delta-rs")
    quarantined = tables.read("events_quarantine").where(f"drop_date = date'{D2}'").count()
    assert quarantined == math.ceil(len(lines) / 10)  # every truncated line is kept, with its reason
    config = yaml.safe_load(path.read_text())
    config["quality"] = {"tables": {"events": {"quarantine_rate": {"max": 0.2}}}}
    path.write_text(yaml.safe_dump(config))
    assert main(["ingest", "--config", str(path), "--start", str(D1), "--end", str(D2)]) == 0
    assert tables.read("quality").where("check = 'quarantine_rate' AND status = 'fail'").count() == 0
