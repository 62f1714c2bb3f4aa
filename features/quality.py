"""Data quality checks declared in schemas/quality.yaml (kinds and meaning documented there).

Library code: DataFrames in, check results out. Every check covers all the days a job wrote in a few
Spark aggregations grouped by day (never one job per day), and only small per-day aggregates reach
the driver. jobs/quality_gate.py writes the results to the Delta table `quality` and stops the job
when a check of severity `error` failed.

    checks = table_checks("events", config)
    results = run_checks(checks, frame, "drop_date", days, previous_rows=1234, quarantined={day: n})
"""

from __future__ import annotations

import copy
import datetime as dt
import functools
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import pyarrow as pa
from pydantic import BeforeValidator, Field, model_validator
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from features.validation import Section, error_at, read_schema_file, validate

PASS, FAIL, SKIP = "pass", "fail", "skip"
PSI_FLOOR = 1e-4  # share given to an empty bucket, so that ln(p/q) stays finite


@dataclass(frozen=True)
class CheckResult:
    check_date: dt.date
    table_name: str
    check: str
    column: str
    value: float | None
    threshold: str
    status: str
    severity: str
    detail: str

    @property
    def blocking(self) -> bool:
        return self.status == FAIL and self.severity == "error"

    def describe(self) -> str:
        shown = "-" if self.value is None else f"{self.value:.4g}"
        where = f" {self.column}" if self.column else ""
        return f"{self.table_name} {self.check_date} {self.check}{where} = {shown} (allowed {self.threshold})"


CHECKED_TABLES = ("events", "user_snapshot", "item_snapshot", "samples")  # the tables whose jobs run checks
CheckedTable = Literal["events", "user_snapshot", "item_snapshot", "samples"]
Severity = Literal["error", "warn"]


def _number(value: Any) -> Any:
    """A finite int or float, kept as written (thresholds are recorded as text in the quality table)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        hint = " (YAML reads 1e6 as text: write 1000000 or 1.0e+6)" if isinstance(value, str) else ""
        raise ValueError(f"should be a finite number, got {value!r}{hint}")
    return value


Number = Annotated[Any, BeforeValidator(_number)]
Share = Annotated[Number, Field(ge=0, le=1)]
Bounds = tuple[Number | None, Number | None]  # [min, max], null = open


def _ordered(columns: dict[str, tuple], where: str = "columns") -> None:
    for column, (low, high) in columns.items():
        if low is not None and high is not None and low > high:
            raise error_at(f"{where}.{column}", f"min {low} is above max {high}")


class RowCountChange(Section):
    min_ratio: Number = Field(ge=0)
    max_ratio: Number = Field(ge=0)
    min_previous_rows: int = Field(1, ge=0)
    severity: Severity = "error"

    @model_validator(mode="after")
    def _ordered(self):
        if self.min_ratio > self.max_ratio:
            raise error_at("min_ratio", f"{self.min_ratio} is above max_ratio {self.max_ratio}")
        return self


class QuarantineRate(Section):
    max: Share
    severity: Severity = "error"


class NullRate(Section):
    columns: dict[str, Share] = Field(min_length=1)
    severity: Severity = "error"


class RangeCheck(Section):
    columns: dict[str, Bounds] = Field(min_length=1)
    max_violation_rate: Share = 0.0
    severity: Severity = "error"

    @model_validator(mode="after")
    def _ordered(self):
        _ordered(self.columns)
        return self


class MeanCheck(Section):
    columns: dict[str, Bounds] = Field(min_length=1)
    min_rows: int = Field(1, ge=0)
    severity: Severity = "error"

    @model_validator(mode="after")
    def _ordered(self):
        _ordered(self.columns)
        return self


class PsiCheck(Section):
    features: list[str] = Field(min_length=1)
    max: Number = Field(ge=0)
    buckets: int = Field(10, ge=2)
    min_rows: int = Field(1, ge=0)
    severity: Severity = "error"


class TableChecks(Section):
    """The checks of one table (schemas/quality.yaml documents each kind); a kind left out does not run."""

    job: Literal["ingest", "snapshot", "samples"] | None = None  # which job runs them (documentation)
    rows_where: str | None = None  # a Spark SQL filter: every check of the table sees only these rows
    row_count_change: RowCountChange | None = None
    quarantine_rate: QuarantineRate | None = None
    null_rate: NullRate | None = None
    range: RangeCheck | None = None
    mean: MeanCheck | None = None
    psi: PsiCheck | None = None


class QualityFile(Section):
    """schemas/quality.yaml."""

    version: Literal[1] = 1
    tables: dict[CheckedTable, TableChecks]


def load_quality(path: str | Path | None = None) -> dict[str, dict]:
    """The declared checks per table of schemas/quality.yaml (or the file at `path`), validated: an
    unknown table, check kind or key, or a bad value is a SpecError naming the file and the key."""
    return _declared(str(path) if path is not None else None)


@functools.cache
def _declared(path: str | None = None) -> dict[str, dict]:
    doc, source = read_schema_file("quality.yaml", path)
    validate(QualityFile, doc, source)
    return dict(doc["tables"])


def merge_checks(base: dict, override: dict | None) -> dict:
    """`override` on top of `base`; a check (or a value) set to null is removed."""
    return _merge(base, override or {})


def _merge(base: dict, override: dict) -> dict:
    merged = copy.deepcopy(base)
    for key, value in (override or {}).items():
        if value is None:  # `check: null` in a config turns a declared check off
            merged.pop(key, None)
            continue
        merged[key] = (
            _merge(merged.get(key, {}), value)
            if isinstance(value, dict) and isinstance(merged.get(key), dict)
            else value
        )
    return merged


def table_checks(table: str, config: Mapping | None = None) -> dict:
    """The checks of `table`: schemas/quality.yaml with the config's `quality.tables.<table>` on top
    (a check set to null is turned off; `quality.enabled: false` turns every check off). `config` is a
    pipeline config mapping; jobs/settings.py validates the overrides when the config is loaded."""
    section = (config or {}).get("quality") or {}
    if section.get("enabled", True) is False:
        return {}
    return merge_checks(_declared().get(table, {}), (section.get("tables") or {}).get(table))


def _profile(frame: DataFrame, day_column: str, checks: TableChecks) -> dict[dt.date, dict]:
    """Per day: rows, NULLs per null_rate column, values outside the range per range column."""
    aggregates = [F.count(F.lit(1)).alias("rows")]
    for column in checks.null_rate.columns if checks.null_rate else {}:
        aggregates.append(F.count_if(F.col(column).isNull()).alias(f"null:{column}"))
    for column, (low, high) in (checks.range.columns if checks.range else {}).items():
        outside = F.lit(False)
        if low is not None:
            outside = outside | (F.col(column) < F.lit(low))
        if high is not None:
            outside = outside | (F.col(column) > F.lit(high))
        aggregates.append(F.count_if(F.coalesce(outside, F.lit(False))).alias(f"range:{column}"))
    for column in checks.mean.columns if checks.mean else {}:
        aggregates.append(F.avg(F.col(column).cast("double")).alias(f"mean:{column}"))
    rows = frame.groupBy(F.col(day_column).alias("day")).agg(*aggregates).collect()  # one row per day
    return {row["day"]: row.asDict() for row in rows}


def psi_by_day(frame: DataFrame, day_column: str, features: list[str], buckets: int = 10) -> DataFrame:
    """PSI of each feature on day D against day D-1, for every day D whose D-1 is in `frame`:
    columns day, feature, psi, rows, baseline_rows. Buckets: the deciles (or `buckets`-quantiles) of
    D-1, NULL a bucket of its own; an empty bucket counts as a share of PSI_FLOOR."""
    probabilities = F.array(*[F.lit(i / buckets) for i in range(1, buckets)])
    edges = frame.groupBy(F.col(day_column).alias("reference")).agg(
        *[F.percentile_approx(F.col(f).cast("double"), probabilities, 1000).alias(f) for f in features]
    )
    edges = edges.select(
        "reference",
        F.explode(
            F.array(*[F.struct(F.lit(f).alias("feature"), F.array_distinct(F.col(f)).alias("edges")) for f in features])
        ).alias("e"),
    ).select("reference", "e.*")
    values = frame.select(
        F.col(day_column).alias("day"),
        F.explode(
            F.array(*[F.struct(F.lit(f).alias("feature"), F.col(f).cast("double").alias("value")) for f in features])
        ).alias("v"),
    ).select("day", "v.*")
    current = values.select("feature", "value", F.date_sub("day", 1).alias("reference"), F.lit("current").alias("role"))
    baseline = values.select("feature", "value", F.col("day").alias("reference"), F.lit("baseline").alias("role"))
    bucket = F.when(F.col("value").isNull(), F.lit(-1)).otherwise(
        F.size(F.filter("edges", lambda edge: F.col("value") > edge))
    )
    counts = (
        current.unionByName(baseline)
        .join(F.broadcast(edges), ["reference", "feature"])
        .groupBy("reference", "feature", bucket.alias("bucket"))
        .agg(
            F.count_if(F.col("role") == "current").alias("current"),
            F.count_if(F.col("role") == "baseline").alias("baseline"),
        )
    )
    totals = counts.groupBy("reference", "feature").agg(
        F.sum("current").alias("rows"), F.sum("baseline").alias("baseline_rows")
    )
    share_current = F.greatest(F.col("current") / F.col("rows"), F.lit(PSI_FLOOR))
    share_baseline = F.greatest(F.col("baseline") / F.col("baseline_rows"), F.lit(PSI_FLOOR))
    return (
        counts.join(totals, ["reference", "feature"])
        .where(F.col("rows") > 0)
        .groupBy("reference", "feature", "rows", "baseline_rows")
        .agg(F.sum((share_current - share_baseline) * F.ln(share_current / share_baseline)).alias("psi"))
        .select(F.date_add("reference", 1).alias("day"), "feature", "psi", "rows", "baseline_rows")
    )


def run_checks(
    table: str,
    checks: Mapping | TableChecks,
    frame: DataFrame,
    day_column: str,
    days: list[dt.date],
    previous_rows: int | None = None,
    quarantined: dict[dt.date, int] | None = None,
    history_start: dt.date | None = None,
    windows: dict[str, int] | None = None,
) -> list[CheckResult]:
    """Run `checks` on the partitions `days` of `frame` (which may also hold day days[0]-1, the
    baseline of the first day's PSI). `previous_rows`: rows of the partition before days[0] (None:
    absent); `quarantined`: quarantined lines per day (quarantine_rate); `history_start` (first day
    of events) and `windows` (feature → window days): PSI is skipped while a window is filling.
    `checks`: as table_checks returns them (validated here: a bad one is a SpecError)."""
    if not checks or not days:
        return []
    if not isinstance(checks, TableChecks):
        checks = validate(TableChecks, checks, f"quality checks of {table}")
    wanted = set(days)
    profile = _profile(frame.where(F.col(day_column).isin(list(days))), day_column, checks)
    results: list[CheckResult] = []

    def add(day, check, column, value, threshold, passed, severity, detail=""):
        status = SKIP if passed is None else (PASS if passed else FAIL)
        results.append(
            CheckResult(
                day, table, check, column, None if value is None else float(value), threshold, status, severity, detail
            )
        )

    rows = {d: int(profile.get(d, {}).get("rows", 0)) for d in days}
    row_change = checks.row_count_change
    if row_change:
        min_ratio, max_ratio = float(row_change.min_ratio), float(row_change.max_ratio)
        floor = row_change.min_previous_rows
        for i, day in enumerate(days):
            before = previous_rows if i == 0 else rows[days[i - 1]]
            threshold = f"[{min_ratio}, {max_ratio}] x rows of the day before"
            if before is None or before < floor:
                add(
                    day,
                    "row_count_change",
                    "",
                    None,
                    threshold,
                    None,
                    row_change.severity,
                    f"{rows[day]} rows; the day before has {before if before is not None else 'no partition'} "
                    f"(< {floor}): not compared",
                )
            else:
                ratio = rows[day] / before
                add(
                    day,
                    "row_count_change",
                    "",
                    ratio,
                    threshold,
                    min_ratio <= ratio <= max_ratio,
                    row_change.severity,
                    f"{rows[day]} rows vs {before} the day before",
                )
    quarantine = checks.quarantine_rate
    if quarantine and quarantined is not None:
        for day in days:
            bad = int(quarantined.get(day, 0))
            total = bad + rows[day]
            rate = bad / total if total else 0.0
            add(
                day,
                "quarantine_rate",
                "",
                rate,
                f"<= {quarantine.max}",
                rate <= float(quarantine.max),
                quarantine.severity,
                f"{bad} of {total} lines invalid (duplicates not counted)",
            )
    null_rate = checks.null_rate
    if null_rate:
        for column, limit in null_rate.columns.items():
            for day in days:
                nulls = int(profile.get(day, {}).get(f"null:{column}", 0))
                rate = nulls / rows[day] if rows[day] else 0.0
                add(
                    day,
                    "null_rate",
                    column,
                    rate,
                    f"<= {limit}",
                    rate <= float(limit),
                    null_rate.severity,
                    f"{nulls} of {rows[day]} rows NULL",
                )
    range_check = checks.range
    if range_check:
        allowed = float(range_check.max_violation_rate)
        for column, (low, high) in range_check.columns.items():
            for day in days:
                outside = int(profile.get(day, {}).get(f"range:{column}", 0))
                rate = outside / rows[day] if rows[day] else 0.0
                add(
                    day,
                    "range",
                    column,
                    rate,
                    f"share outside [{low}, {high}] <= {allowed}",
                    rate <= allowed,
                    range_check.severity,
                    f"{outside} of {rows[day]} rows outside",
                )
    mean_check = checks.mean
    if mean_check:
        minimum = mean_check.min_rows
        for column, (low, high) in mean_check.columns.items():
            for day in days:
                mean = profile.get(day, {}).get(f"mean:{column}")
                if rows[day] < minimum:
                    add(
                        day,
                        "mean",
                        column,
                        mean,
                        f"in [{low}, {high}]",
                        None,
                        mean_check.severity,
                        f"{rows[day]} rows (< {minimum}): not compared",
                    )
                    continue
                inside = mean is not None and (low is None or mean >= low) and (high is None or mean <= high)
                add(
                    day,
                    "mean",
                    column,
                    mean,
                    f"in [{low}, {high}]",
                    None if mean is None else inside,
                    mean_check.severity,
                    f"mean of {rows[day]} rows",
                )
    psi_check = checks.psi
    if psi_check:
        limit, minimum = float(psi_check.max), psi_check.min_rows
        measured = {
            (r["day"], r["feature"]): r
            for r in psi_by_day(frame, day_column, list(psi_check.features), psi_check.buckets).collect()
            if r["day"] in wanted
        }
        for feature in psi_check.features:
            window = int((windows or {}).get(feature) or 1)
            for day in days:
                found = measured.get((day, feature))
                if history_start is not None and (day - history_start).days + 1 <= window:
                    add(
                        day,
                        "psi",
                        feature,
                        None,
                        f"<= {limit}",
                        None,
                        psi_check.severity,
                        f"its {window}-day window is still filling (history starts {history_start}): not compared",
                    )
                elif found is None or min(found["rows"], found["baseline_rows"]) < minimum:
                    have = "no day before" if found is None else f"{found['rows']} vs {found['baseline_rows']} rows"
                    add(
                        day,
                        "psi",
                        feature,
                        None,
                        f"<= {limit}",
                        None,
                        psi_check.severity,
                        f"{have} (< {minimum}): not compared",
                    )
                else:
                    psi = float(found["psi"])
                    add(
                        day,
                        "psi",
                        feature,
                        psi,
                        f"<= {limit}",
                        math.isfinite(psi) and psi <= limit,
                        psi_check.severity,
                        f"vs {day - dt.timedelta(days=1)}, deciles of the day before",
                    )
    return results


RESULT_SCHEMA = pa.schema(
    [
        ("check_date", pa.date32()),
        ("table_name", pa.string()),
        ("check", pa.string()),
        ("column", pa.string()),
        ("value", pa.float64()),
        ("threshold", pa.string()),
        ("status", pa.string()),
        ("severity", pa.string()),
        ("detail", pa.string()),
        ("table_version", pa.int64()),
        ("job", pa.string()),
        ("run_id", pa.string()),
    ]
)  # the `quality` table's columns: a check's result, the version of the table it read, who checked


def results_table(results: list[CheckResult], run: dict[str, Any], versions: dict[str, int] | None = None) -> pa.Table:
    """The results as rows of the `quality` table (an Arrow table the driver writes without Spark), with
    the version of the table each check read and the job and run that checked."""
    rows = [
        {
            **asdict(r),
            "table_version": (versions or {}).get(r.table_name),
            "job": run.get("job"),
            "run_id": run.get("run_id"),
        }
        for r in results
    ]
    return pa.Table.from_pylist(rows, schema=RESULT_SCHEMA)
