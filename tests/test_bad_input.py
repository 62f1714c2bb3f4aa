"""Things a user can get wrong end with one line on stderr and a documented exit code, never a traceback,
and lose nothing (the table: command line, exit code, part of the message). Also: `recpipe sql` only
reads, and every exit code of the README's table.

In-process through jobs.cli.main (the suite's Spark session is shared); two cases run as real processes,
where Spark's Java logging reaches stderr."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from features.errors import ConcurrentWriteError, OnlineStoreUnreachable, PublishRefused, QualityCheckFailed
from features.ingest_runs import IngestRaceLost
from jobs import cli
from jobs.cli import main

REPO = Path(__file__).resolve().parents[1]
KEEP = "keep me\n"  # a file the cases point at as if it were a directory: it must survive unchanged
ROOT_REASON = "runs as root: chmod does not stop root from writing"


@pytest.fixture(scope="module")
def places(spark, tmp_path_factory):
    """A two-day synthetic warehouse, a copy of its events table with a garbage first Delta log, a plain
    file, a read-only warehouse, an empty directory, a tiny SavedModel, a damaged one, request files."""
    root = tmp_path_factory.mktemp("bad-input")
    config = yaml.safe_load((REPO / "conf" / "demo.yaml").read_text())
    config["paths"] = {"raw": str(root / "raw"), "warehouse": str(root / "warehouse")}
    config["dates"] = {"start": "2026-01-01", "end": "2026-01-02"}
    (root / "config.yaml").write_text(yaml.safe_dump(config))
    assert (
        main(
            [
                "generate-logs",
                "--out",
                str(root / "raw"),
                "--start-date",
                "2026-01-01",
                "--days",
                "2",
                "--users",
                "20",
                "--items",
                "10",
                "--seed",
                "3",
            ]
        )
        == 0
    )
    assert main(["ingest", "--config", str(root / "config.yaml")]) == 0
    shutil.copytree(root / "warehouse" / "events", root / "damaged" / "events")
    (root / "damaged" / "events" / "_delta_log" / "00000000000000000000.json").write_text("garbage{\n")
    (root / "file").write_text(KEEP)
    (root / "readonly").mkdir()
    (root / "readonly").chmod(0o555)
    (root / "empty").mkdir()
    _tiny_model(root / "model")
    (root / "damaged_model").mkdir()
    (root / "damaged_model" / "saved_model.pb").write_bytes(b"\x08\x96\x01 not a SavedModel")
    requests = root / "requests"
    requests.mkdir()
    (requests / "good.json").write_text('{"inputs": {"a": [1.0, 2.0], "b": [0.5, 0.25]}}')
    (requests / "list.json").write_text('[{"a": 1.0, "b": 2.0}]')
    (requests / "uneven.json").write_text('{"inputs": {"a": [1.0, 2.0], "b": [0.5]}}')
    (requests / "latin1.json").write_bytes('{"instances": [{"a": "café"}]}'.encode("latin-1"))
    (requests / "a_directory.json").mkdir()
    paths = {
        "config": root / "config.yaml",
        "root": root,
        "wh": root / "warehouse",
        "file": root / "file",
        "damaged": root / "damaged",
        "readonly": root / "readonly",
        "empty": root / "empty",
        "model": root / "model",
        "damaged_model": root / "damaged_model",
        "requests": requests,
    }
    yield {key: str(value) for key, value in paths.items()}
    (root / "readonly").chmod(0o755)


def _tiny_model(path: Path) -> None:
    """A SavedModel with serving_default(a, b: float32 [None]) -> probability [None, 1]."""
    import tensorflow as tf

    class Tiny(tf.Module):
        @tf.function(
            input_signature=[tf.TensorSpec([None], tf.float32, name="a"), tf.TensorSpec([None], tf.float32, name="b")]
        )
        def serve(self, a, b):
            return {"probability": tf.sigmoid(a + b)[:, None]}

    tiny = Tiny()
    tf.saved_model.save(tiny, str(path), signatures={"serving_default": tiny.serve})


SQL = ["sql", "--config", "{config}"]
NOT_ROOT = pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason=ROOT_REASON)

CASES = [
    # recpipe sql: the query's own mistakes, found when Spark parses, analyses or runs it
    pytest.param([*SQL, "SELECT 1/0"], 2, "query failed: [DIVIDE_BY_ZERO] Division by zero", id="sql-divide-by-zero"),
    pytest.param([*SQL, "SELECT CAST('x' AS INT)"], 2, "query failed: [CAST_INVALID_INPUT]", id="sql-bad-cast"),
    pytest.param(
        [*SQL, "SELECT CAST(event_type AS INT) FROM events"],
        2,
        "query failed: [CAST_INVALID_INPUT]",
        id="sql-bad-cast-in-a-task",
    ),
    pytest.param(
        [*SQL, "--out", "{root}/x.parquet", "SELECT user_id / 0 FROM events"],
        2,
        "query failed: [DIVIDE_BY_ZERO]",
        id="sql-out-divide-by-zero",
    ),
    pytest.param(
        [*SQL, "SELECT no_such_column FROM events"], 2, "query failed: [UNRESOLVED_COLUMN", id="sql-unknown-column"
    ),
    pytest.param(
        [*SQL, "SELECT * FROM no_such_table"], 2, "query failed: [TABLE_OR_VIEW_NOT_FOUND]", id="sql-unknown-table"
    ),
    pytest.param([*SQL, "SELEC 1"], 2, "query failed: [PARSE_SYNTAX_ERROR]", id="sql-parse-error"),
    pytest.param(
        [*SQL, "SELECT timestamp'9999-12-31 00:00:00' AS t"],
        2,
        "): write it with --out FILE.parquet",
        id="sql-unprintable-timestamp",
    ),
    # recpipe sql: time travel, --out, --warehouse
    pytest.param(
        [*SQL, "--as-of-timestamp", "2000-01-01T00:00:00Z", "SELECT count(*) FROM events"],
        2,
        "no table existed at 2000-01-01T00:00:00Z: the first commit is ",
        id="sql-before-every-table",
    ),
    pytest.param(
        [*SQL, "--as-of-version", "999", "SELECT 1"],
        2,
        "no table has version 999 (versions: events 0..",
        id="sql-version-999",
    ),
    pytest.param(
        [*SQL, "--as-of-version", "events=999", "SELECT 1"], 2, "events has versions 0..", id="sql-table-version-999"
    ),
    pytest.param(
        [*SQL, "--out", "{file}/result.csv", "SELECT 1"],
        2,
        "--out {file}/result.csv: {file} is a file, not a directory",
        id="sql-out-under-a-file",
    ),
    pytest.param([*SQL, "--out", "{root}", "SELECT 1"], 2, "--out must end in .parquet or .csv", id="sql-out-a-dir"),
    pytest.param(
        [*SQL, "--warehouse", "{file}", "SELECT 1"],
        2,
        "warehouse {file}: {file} is a file, not a directory",
        id="sql-warehouse-a-file",
    ),
    pytest.param(
        [*SQL, "--warehouse", "{damaged}", "SELECT count(*) FROM events"],
        2,
        "table events at {damaged}/events: its Delta log cannot be read (",
        id="sql-damaged-delta-log",
    ),
    pytest.param(
        ["tables", "--config", "{config}", "--warehouse", "{damaged}"],
        2,
        "table events at {damaged}/events: its Delta log cannot be read (",
        id="tables-damaged-delta-log",
    ),
    pytest.param(
        ["ingest", "--config", "{config}", "--warehouse", "{readonly}", "--date", "2026-01-01"],
        2,
        "warehouse {readonly} is not writable",
        id="ingest-read-only-warehouse",
        marks=NOT_ROOT,
    ),
    pytest.param(
        [*SQL, "--master", "spark://127.0.0.1:1", "SELECT 1"],
        6,
        "cannot reach the Spark master spark://127.0.0.1:1 (127.0.0.1:1: Connection refused)",
        id="sql-unreachable-master",
    ),
    # recpipe sql only reads
    pytest.param(
        [*SQL, "INSERT INTO events SELECT * FROM events"],
        2,
        "recpipe sql only reads tables: INSERT is refused",
        id="sql-insert",
    ),
    pytest.param(
        [*SQL, "INSERT OVERWRITE DIRECTORY '{root}/dump' USING parquet SELECT * FROM events"],
        2,
        "INSERT OVERWRITE DIRECTORY is refused",
        id="sql-insert-overwrite-directory",
    ),
    pytest.param([*SQL, "CREATE TABLE t (a INT) USING parquet"], 2, "CREATE TABLE is refused", id="sql-create"),
    pytest.param([*SQL, "DROP TABLE events"], 2, "DROP TABLE is refused", id="sql-drop"),
    pytest.param([*SQL, "ALTER TABLE events ADD COLUMNS (x INT)"], 2, "ALTER is refused", id="sql-alter"),
    pytest.param(
        [*SQL, "EXPLAIN INSERT INTO events SELECT * FROM events"], 2, "INSERT is refused", id="sql-explain-insert"
    ),
    pytest.param(
        [*SQL, "SET spark.sql.ansi.enabled=false"],
        2,
        "does not change settings: give Spark settings as --conf KEY=VALUE",
        id="sql-set-a-value",
    ),
    pytest.param(
        [*SQL, "SELECT TRANSFORM(user_id) USING 'cat' FROM events"],
        2,
        "TRANSFORM ... USING is refused",
        id="sql-transform-using",
    ),
    pytest.param(
        [*SQL, "SELECT java_method('java.lang.System', 'exit', 1)"],
        2,
        "does not call Java methods: java_method() is refused",
        id="sql-java-method",
    ),
    pytest.param(
        [*SQL, "SELECT * FROM parquet.`/etc`"],
        2,
        "reads files only under the warehouse {wh}: parquet.`/etc` is outside it",
        id="sql-parquet-etc",
    ),
    pytest.param(
        [*SQL, "SELECT * FROM json.`{root}/raw/events`"],
        2,
        "json.`{root}/raw/events` is outside it",
        id="sql-raw-drops",
    ),
    pytest.param([*SQL, "SELECT * FROM parquet.`{wh}/../raw`"], 2, "is outside it", id="sql-dot-dot"),
    pytest.param([*SQL, "SELECT * FROM parquet.`{wh}/*`"], 2, "without globs", id="sql-glob"),
    pytest.param(
        [*SQL, "WITH x AS (SELECT * FROM text.`/etc/passwd`) SELECT * FROM x"],
        2,
        "is outside it",
        id="sql-file-in-a-cte",
    ),
    pytest.param(
        [*SQL, "SELECT * FROM events WHERE user_id IN (SELECT value FROM text.`/etc/passwd`)"],
        2,
        "is outside it",
        id="sql-file-in-a-subquery",
    ),
    pytest.param(
        ["history", "--config", "{config}", "../x"],
        2,
        "'../x' is a path, not a table name; tables: ",
        id="history-dot-dot",
    ),
    pytest.param(
        ["history", "--config", "{config}", "{wh}/events"], 2, "is a path, not a table name", id="history-absolute-path"
    ),
    pytest.param(
        ["register", "--config", "{config}", "--dry-run", "--database", "x; DROP TABLE y"],
        2,
        "--database must be a SQL identifier",
        id="register-database-not-an-identifier",
    ),
    # recpipe predict
    pytest.param(
        ["predict", "--model-dir", "{model}", "--request", "{requests}/list.json"],
        2,
        "bad request {requests}/list.json: the request body must be a JSON object",
        id="predict-json-list",
    ),
    pytest.param(
        ["predict", "--model-dir", "{model}", "--request", "{requests}/uneven.json"],
        2,
        "inputs of different lengths: a has 2 values, b has 1",
        id="predict-uneven-columns",
    ),
    pytest.param(
        ["predict", "--model-dir", "{model}", "--request", "{requests}/a_directory.json"],
        2,
        "is a directory, not a JSON file",
        id="predict-request-a-directory",
    ),
    pytest.param(
        ["predict", "--model-dir", "{model}", "--request", "{requests}/latin1.json"],
        2,
        "is not UTF-8 text (byte ",
        id="predict-request-not-utf8",
    ),
    pytest.param(
        ["predict", "--model-dir", "{damaged_model}", "--request", "{requests}/good.json"],
        2,
        "cannot load the SavedModel at {damaged_model}: ",
        id="predict-damaged-saved-model",
    ),
    # import-movielens, generate-logs
    pytest.param(
        ["import-movielens", "{empty}", "--out", "{root}/ml"],
        2,
        "{empty} is not a MovieLens directory: expected u.data, u.item, u.user",
        id="movielens-no-files",
    ),
    pytest.param(
        ["import-movielens", "{empty}", "--out", "{file}"],
        2,
        "--out {file}: {file} is a file",
        id="movielens-out-a-file",
    ),
    pytest.param(
        ["generate-logs", "--out", "{root}/g", "--impressions-per-user-day", "-1"],
        2,
        "--impressions-per-user-day must be a positive number, not -1.0",
        id="generate-negative-rate",
    ),
    pytest.param(
        ["generate-logs", "--out", "{root}/g", "--impressions-per-user-day", "nan"],
        2,
        "--impressions-per-user-day must be a positive number, not nan",
        id="generate-nan-rate",
    ),
    pytest.param(
        ["generate-logs", "--out", "{root}/g", "--ctr-drift", "9"],
        2,
        "--ctr-drift must be a logit shift between -5 and 5, not 9.0",
        id="generate-drift-out-of-range",
    ),
    pytest.param(
        ["generate-logs", "--out", "{file}", "--days", "1"],
        2,
        "--out {file}: {file} is a file, not a directory",
        id="generate-out-a-file",
    ),
]


@pytest.mark.parametrize("argv, code, message", CASES)
def test_one_line_a_documented_code_and_no_traceback(places, capsys, argv, code, message):
    damaged_log = Path(places["damaged"], "events", "_delta_log", "00000000000000000000.json").read_bytes()
    assert main([a.format(**places) for a in argv]) == code
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"recpipe {argv[0]}: error: "), lines[0]
    assert message.format(**places) in lines[0], lines[0]
    # lose nothing: what the mistakes pointed at is unchanged
    assert Path(places["file"]).read_text() == KEEP
    assert Path(places["damaged"], "events", "_delta_log", "00000000000000000000.json").read_bytes() == damaged_log
    assert not any(Path(places["root"], name).exists() for name in ("dump", "g", "ml", "x.parquet"))


@pytest.mark.parametrize(
    "query",
    [
        "SELECT event_type, count(*) AS n FROM events GROUP BY 1 ORDER BY 1",
        "WITH d AS (SELECT user_id, count(*) n FROM events GROUP BY 1) SELECT max(n) FROM d",
        "SELECT user_id, row_number() OVER (PARTITION BY user_id ORDER BY event_time) FROM events LIMIT 3",
        "SELECT count(*) FROM events WHERE user_id IN (SELECT user_id FROM users)",
        "SELECT count(*) FROM parquet.`{wh}/events`",
        "DESCRIBE events",
        "SHOW TABLES",
        "EXPLAIN SELECT * FROM events",
        "SET spark.sql.ansi.enabled",
        "FROM events |> WHERE user_id > 3 |> AGGREGATE count(*) AS n",
    ],
)
def test_sql_reads_pass_the_guard(places, capsys, query):
    assert main([*(a.format(**places) for a in SQL), query.format(**places)]) == 0, capsys.readouterr().err
    assert "(read events v" in capsys.readouterr().out


def test_predict_answers_a_good_request(places, capsys):
    assert main(["predict", "--model-dir", places["model"], "--request", f"{places['requests']}/good.json"]) == 0
    assert len(json.loads(capsys.readouterr().out)["outputs"]) == 2


@pytest.mark.parametrize(
    "error, code, line",
    [
        (
            RuntimeError("boom"),
            1,
            "recpipe tables: internal error: RuntimeError: boom (a bug: please report it with the traceback above)",
        ),
        (
            PublishRefused("deepfm v3: AUC 0.51 below the floor 0.6"),
            3,
            "recpipe tables: refused: deepfm v3: AUC 0.51 below the floor 0.6",
        ),
        (
            QualityCheckFailed("events 2026-01-02 row_count_change: 40% fewer rows\ndetails"),
            4,
            "recpipe tables: quality check failed: events 2026-01-02 row_count_change: 40% fewer rows",
        ),
        (
            ConcurrentWriteError("table events: another writer committed version 7 ..."),
            5,
            "recpipe tables: concurrent write: table events: another writer committed version 7 ...",
        ),
        (
            IngestRaceLost("ingest run r1 stopped before committing"),
            5,
            "recpipe tables: concurrent write: ingest run r1 stopped before committing",
        ),
        (
            OnlineStoreUnreachable("the online store at redis://127.0.0.1:1/0 accepts no connection"),
            7,
            "recpipe tables: error: the online store at redis://127.0.0.1:1/0 accepts no connection",
        ),
    ],
)
def test_every_exit_code_of_the_readme(monkeypatch, capsys, error, code, line):
    def fails(args):
        raise error

    monkeypatch.setitem(cli.COMMANDS, "tables", fails)
    assert main(["tables"]) == code
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == line
    assert ("Traceback" in err[0]) == (code == 1)  # only a bug keeps its traceback
    assert len(err) == 1 or code == 1


def test_the_exit_code_table_in_the_readme_matches_the_cli():
    readme = (REPO / "README.md").read_text()
    for name in (
        "EXIT_INTERNAL",
        "EXIT_USAGE",
        "EXIT_REFUSED",
        "EXIT_QUALITY",
        "EXIT_CONFLICT",
        "EXIT_UNREACHABLE",
        "EXIT_STORE_UNREACHABLE",
    ):
        assert f"\n| {getattr(cli, name)} |" in readme, name


def _recpipe(*argv: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, "-m", "jobs.cli", *argv], capture_output=True, text=True, env=env, cwd=REPO, timeout=600
    )


def test_a_failing_task_prints_no_java_stack_trace(places):
    """A real process: local mode prints the executors' logs (with Java stack traces) on stderr."""
    result = _recpipe("sql", "--config", places["config"], "SELECT CAST(event_type AS INT) FROM events")
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr and "\tat org.apache" not in result.stderr, result.stderr[-3000:]
    lines = [line for line in result.stderr.splitlines() if line.startswith("recpipe ")]
    assert len(lines) == 1 and lines[0].startswith("recpipe sql: error: query failed: [CAST_INVALID_INPUT]"), lines
    assert result.stderr.strip().splitlines()[-1] == lines[0]


def test_an_unreachable_master_fails_before_spark_starts(places):
    result = _recpipe("sql", "--config", places["config"], "--master", "spark://127.0.0.1:1", "SELECT 1")
    assert result.returncode == 6
    assert result.stderr.strip() == (
        "recpipe sql: error: cannot reach the Spark master spark://127.0.0.1:1 "
        "(127.0.0.1:1: Connection refused): check --master or spark.master, and that "
        "the cluster is up"
    )  # one line: not even the JVM's start-up lines
