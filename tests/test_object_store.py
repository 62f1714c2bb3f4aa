"""Object-store URIs (features/storage.py) and everything that reaches an object store without Spark's Hadoop
jars, against a real S3-compatible server started here (moto in server mode, from its own venv .venv-moto:
`make moto`): the delta-rs commit of staged Parquet files, partition replacement, time travel, the table
listing/history/describe of `recpipe tables` and `recpipe history`, and the export publish with keep-K.
Spark itself cannot read or write s3a:// here (no hadoop-aws jars), so the Parquet files Spark would write
are written by pyarrow in the same layout."""

from __future__ import annotations

import os
import subprocess
import threading
import time
import uuid
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest
import yaml

from conftest import REPO_ROOT, skip_or_fail
from standalone_cluster import free_port

MOTO_VENV = Path(os.environ.get("RECPIPE_MOTO_VENV", REPO_ROOT / ".venv-moto"))
BUCKET = "recpipe-test"


@pytest.fixture(scope="module")
def s3_server(tmp_path_factory):
    server = MOTO_VENV / "bin" / "moto_server"
    if not server.exists():
        skip_or_fail(f"moto's server is missing at {server}: run make moto (make test does)")
    port = free_port()
    log = tmp_path_factory.mktemp("moto") / "moto.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [str(server), "-H", "127.0.0.1", "-p", str(port)], stdout=out, stderr=subprocess.STDOUT
        )
    endpoint = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                pafs.S3FileSystem(
                    endpoint_override=f"127.0.0.1:{port}",
                    scheme="http",
                    access_key="test",
                    secret_key="test",
                    region="us-east-1",
                    allow_bucket_creation=True,
                    connect_timeout=1,
                    request_timeout=2,
                ).create_dir(BUCKET)
                break
            except OSError:
                time.sleep(0.3)
        else:
            raise RuntimeError(f"moto server did not start: {log.read_text()[-2000:]}")
        yield endpoint
    finally:
        process.terminate()
        process.wait(timeout=20)


@pytest.fixture
def s3(s3_server, monkeypatch):
    """Credentials from the standard variables, the endpoint and region from the config's storage section."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    for name in ("AWS_ENDPOINT_URL", "AWS_REGION", "AWS_DEFAULT_REGION", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    return {"endpoint_url": s3_server, "region": "us-east-1"}


def test_resolver_maps_every_spelling(monkeypatch):
    from features.errors import PipelineInputError
    from features.storage import resolve

    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    monkeypatch.setenv("AWS_REGION", "eu-west-1")
    for uri in ("s3a://b/w/h/", "s3://b/w/h", "s3n://b/w/h"):
        location = resolve(uri)
        assert (location.spark_uri, location.arrow_uri) == ("s3a://b/w/h", "s3://b/w/h")
        assert location.storage_options == {"aws_region": "eu-west-1"}
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://minio:9000")
    assert resolve("s3a://b/w").storage_options == {
        "aws_endpoint_url": "http://minio:9000",
        "aws_region": "eu-west-1",
        "aws_allow_http": "true",
    }
    configured = resolve(
        "s3://b/w",
        {"endpoint_url": "https://s3.example", "region": "us-east-2", "options": {"aws_s3_addressing_style": "path"}},
    )
    assert configured.storage_options == {
        "aws_endpoint_url": "https://s3.example",
        "aws_region": "us-east-2",
        "aws_allow_http": "false",
        "aws_s3_addressing_style": "path",
    }
    azure = resolve("abfss://data@acct.dfs.core.windows.net/recpipe/wh")
    assert (azure.spark_uri, azure.arrow_uri) == (
        "abfss://data@acct.dfs.core.windows.net/recpipe/wh",
        "az://data/recpipe/wh",
    )
    assert azure.storage_options == {"azure_storage_account_name": "acct"}
    assert (
        resolve("az://data/wh", {"options": {"azure_storage_account_name": "acct"}}).spark_uri
        == "abfss://data@acct.dfs.core.windows.net/wh"
    )
    monkeypatch.delenv("AZURE_STORAGE_ACCOUNT_NAME", raising=False)
    with pytest.raises(PipelineInputError, match="no Azure storage account"):
        resolve("az://data/wh").spark_uri
    for uri in ("gs://b/w", "gcs://b/w"):
        assert (resolve(uri).spark_uri, resolve(uri).arrow_uri) == ("gs://b/w", "gs://b/w")
    assert resolve("hdfs://nn:8020/w").spark_uri == "hdfs://nn:8020/w"
    assert resolve("file:///tmp/w").spark_uri == "/tmp/w" == resolve("/tmp/w/").arrow_uri
    assert resolve("s3a://b/w").child("events", "dt=1").arrow_uri == "s3://b/w/events/dt=1"
    assert resolve("s3a://b/w").arrow_to_spark("s3://b/w/events/x.parquet") == "s3a://b/w/events/x.parquet"
    with pytest.raises(PipelineInputError, match="unsupported storage scheme ftp://"):
        resolve("ftp://b/w")


def _staged_writer(tables, name: str, rows: dict[str, list[int]]):
    """What Spark's partitioned Parquet write leaves under <table>/<run_dir>: one file per day, unique names."""
    fs, table_dir = tables._fs(name)

    def write(run_dir: str):
        for day, values in rows.items():
            pq.write_table(
                pa.table({"id": pa.array(values, pa.int64()), "day": [day] * len(values)}).drop(["day"]),
                f"{table_dir}/{run_dir}/day={day}/part-00000-{uuid.uuid4().hex}.c000.snappy.parquet",
                filesystem=fs,
            )
            fs.open_output_stream(f"{table_dir}/{run_dir}/_SUCCESS").close()

    return write


def _replace(tables, name: str, rows: dict[str, list[int]], metadata: dict) -> int:
    schema = pa.schema([("id", pa.int64()), ("day", pa.string())])
    run_dir = f"_staging/run-{time.time_ns()}"
    read = tables._snapshot(name)
    write = _staged_writer(tables, name, rows)
    return tables._commit_staged(
        name,
        run_dir,
        schema,
        "day",
        "overwrite",
        sorted(rows),
        metadata,
        None,
        read,
        write_files=lambda: write(run_dir),
        retry=lambda: True,
    )


def test_delta_rs_commits_lists_and_time_travels_on_s3(s3):
    from deltalake import DeltaTable

    from features.tables import DeltaRsTables, describe

    tables = DeltaRsTables(None, f"s3a://{BUCKET}/delta/warehouse", s3)
    assert tables.root == f"s3a://{BUCKET}/delta/warehouse" and tables.path("t") == f"s3a://{BUCKET}/delta/warehouse/t"
    assert _replace(tables, "t", {"2026-01-01": [1, 2], "2026-01-02": [3]}, {"job": "first"}) == 0
    assert _replace(tables, "t", {"2026-01-02": [4, 5, 6]}, {"job": "second"}) == 1

    uri, options = f"s3://{BUCKET}/delta/warehouse/t", tables.location.storage_options
    now = DeltaTable(uri, storage_options=options).to_pandas().sort_values("id")
    assert now.to_dict("list") == {"id": [1, 2, 4, 5, 6], "day": ["2026-01-01"] * 2 + ["2026-01-02"] * 3}
    before = DeltaTable(uri, version=0, storage_options=options).to_pandas().sort_values("id")
    assert before["id"].tolist() == [1, 2, 3]
    assert tables.version("t") == 1 and tables.row_count("t") == 5 and tables.row_count("t", version=0) == 3
    assert tables.partitions("t") == ("day", ["2026-01-01", "2026-01-02"])
    assert [h["metadata"]["job"] for h in tables.history("t")] == ["second", "first"]
    assert tables.names() == ["t"]
    described = describe(tables, tables.names())[0]
    assert (described["version"], described["partitions"], described["rows"], described["last_job"]) == (
        1,
        2,
        5,
        "second",
    )
    # what Spark would read: s3a:// URIs of exactly the newest version's files, inside their partitions
    spark_files = tables.spark_uris(tables._delta("t").file_uris())
    assert len(spark_files) == 2 and all(
        f.startswith(f"s3a://{BUCKET}/delta/warehouse/t/day=2026-01-0") for f in spark_files
    )
    fs, table_dir = tables._fs("t")
    left = [
        i.path
        for i in fs.get_file_info(pafs.FileSelector(f"{table_dir}/_staging", recursive=True, allow_not_found=True))
        if i.type == pafs.FileType.File
    ]
    assert left == []  # the staging files were moved or removed


def test_recpipe_tables_and_history_read_an_s3a_warehouse(s3, spark, tmp_path, capsys):
    """`recpipe tables` and `history` on an s3a:// warehouse (the shipped cluster config's spelling): the
    listing goes through the resolver (pyarrow's from_uri does not know s3a) and delta-rs."""
    from features.tables import DeltaRsTables
    from jobs.cli import main

    warehouse = f"s3a://{BUCKET}/cli/warehouse"
    tables = DeltaRsTables(None, warehouse, s3)
    _replace(tables, "events", {"2026-01-03": [7, 8, 9]}, {"job": "ingest", "run_id": "r1"})
    config = yaml.safe_load((REPO_ROOT / "conf" / "demo.yaml").read_text())
    config["paths"] = {"raw": str(tmp_path / "raw"), "warehouse": warehouse}
    config["storage"] = s3
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(config))
    assert main(["tables", "--config", str(tmp_path / "c.yaml"), "--master", "local[2]"]) == 0
    listed = capsys.readouterr().out.splitlines()[-1].split()
    assert listed[:6] == ["events", "0", "day", "1", "2026-01-03..2026-01-03", "3"]
    assert listed[-1] == "(ingest)"
    assert main(["history", "events", "--config", str(tmp_path / "c.yaml"), "--master", "local[2]"]) == 0
    assert "ingest" in capsys.readouterr().out


def test_quality_rows_are_recorded_on_s3_without_spark(s3):
    """The `quality` table of an s3a:// warehouse: recording check results is pyarrow + delta-rs only (the
    tables have no Spark session), keeps the other checked tables' rows of the day, and a rerun of a
    table's checks replaces exactly its own rows."""
    import datetime as dt

    from deltalake import DeltaTable

    from features.quality import CheckResult
    from features.tables import DeltaRsTables
    from jobs.quality_gate import QUALITY_TABLE, record

    tables = DeltaRsTables(None, f"s3a://{BUCKET}/quality/warehouse", s3)
    d1, d2 = dt.date(2026, 1, 1), dt.date(2026, 1, 2)

    def result(day, table, status, value):
        return CheckResult(day, table, "row_count", "", value, ">= 1", status, "error", f"{value} rows")

    events = [result(d1, "events", "pass", 10.0), result(d2, "events", "pass", 12.0)]
    assert record(tables, events, {"job": "ingest", "run_id": "r1"}, {"events": 3}) == 0
    assert record(tables, [result(d2, "user_snapshot", "fail", 0.0)], {"job": "snapshot", "run_id": "r2"}) == 1
    assert record(tables, [result(d2, "events", "fail", 0.0)], {"job": "ingest", "run_id": "r3"}, {"events": 4}) == 2

    uri, options = f"s3://{BUCKET}/quality/warehouse/{QUALITY_TABLE}", tables.location.storage_options
    rows = DeltaTable(uri, storage_options=options).to_pandas()
    got = sorted(
        (
            str(r.check_date),
            r.table_name,
            r.status,
            r.value,
            r.run_id,
            None if pd.isna(r.table_version) else r.table_version,
        )
        for r in rows.itertuples()
    )
    assert got == [
        ("2026-01-01", "events", "pass", 10.0, "r1", 3),  # not rechecked: stays
        ("2026-01-02", "events", "fail", 0.0, "r3", 4),  # the rerun's row replaced r1's
        ("2026-01-02", "user_snapshot", "fail", 0.0, "r2", None),  # another table's row of the day stays
    ]
    assert [h["metadata"]["run_id"] for h in tables.history(QUALITY_TABLE)] == ["r3", "r2", "r1"]
    assert tables.partitions(QUALITY_TABLE) == ("check_date", ["2026-01-01", "2026-01-02"])
    first = DeltaTable(uri, version=0, storage_options=options).to_pandas()
    assert sorted(first["run_id"]) == ["r1", "r1"]  # time travel to the first record


def _fake_saved_model(root: Path, tag: str) -> dict[str, int]:
    files = {
        "saved_model.pb": 40_000,
        "variables/variables.index": 2_000,
        "variables/variables.data-00000-of-00001": 300_000,
        "assets.extra/tf_serving_warmup_requests": 50_000,
        "assets.extra/model_card.json": 0,
    }
    for name, size in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes((tag.encode() * size)[:size] or b'{"model": "deepfm"}')
    return {name: (root / name).stat().st_size for name in files}


def test_export_publish_on_s3_never_lists_a_partial_version(s3, tmp_path, monkeypatch):
    """A watcher reading models.config as TF Serving does, polling all the time, never finds a listed
    version with a missing or short file; a publish that dies midway lists nothing; keep-K deletes only
    versions that are no longer listed."""
    from jobs.export_store import MODEL_CONFIG, StoreExport, served_versions

    store = StoreExport(f"s3a://{BUCKET}/serving", s3)
    fs, base = store.fs, store.base
    expected = _fake_saved_model(tmp_path / "model", "x")
    seen, problems, stop = [], [], threading.Event()

    def watch():
        while not stop.is_set():
            try:
                with fs.open_input_stream(f"{base}/{MODEL_CONFIG}") as handle:
                    listed = served_versions(handle.read().decode()).get("deepfm", [])
            except FileNotFoundError:
                continue
            for version in listed:
                infos = fs.get_file_info(
                    pafs.FileSelector(f"{base}/deepfm/{version}", recursive=True, allow_not_found=True)
                )
                sizes = {
                    i.path.split(f"/deepfm/{version}/", 1)[1]: i.size for i in infos if i.type == pafs.FileType.File
                }
                if sizes != expected:
                    problems.append((version, sizes))
            seen.append(tuple(listed))

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        for _ in range(3):
            version = store.next_version("deepfm")
            store.publish(tmp_path / "model", "deepfm", version, keep_versions=2)
        # an upload that dies after two files: nothing new is listed, and its number is not reused
        real_put, calls = StoreExport._put, []

        def dying_put(self, path, data):
            calls.append(path)
            if len(calls) > 2:
                raise OSError("connection reset (injected)")
            real_put(self, path, data)

        monkeypatch.setattr(StoreExport, "_put", dying_put)
        with pytest.raises(OSError, match="injected"):
            store.publish(tmp_path / "model", "deepfm", store.next_version("deepfm"), keep_versions=2)
        monkeypatch.setattr(StoreExport, "_put", real_put)
        assert store.published("deepfm") == [2, 3] and store.version_dirs("deepfm") == [2, 3, 4]
        assert store.next_version("deepfm") == 5
        store.publish(tmp_path / "model", "deepfm", 5, keep_versions=2)
        time.sleep(0.5)
    finally:
        stop.set()
        watcher.join()
    assert problems == []
    assert seen and set(seen) <= {(1,), (1, 2), (2, 3), (3, 5)}
    assert seen[-1] == (3, 5)
    with fs.open_input_stream(f"{base}/{MODEL_CONFIG}") as handle:
        config = handle.read().decode()
    assert served_versions(config) == {"deepfm": [3, 5]}
    assert f'base_path: "s3://{BUCKET}/serving/deepfm"' in config
    # keep-K removed versions 1 and 2 after they left the config; the partial 4 stays unlisted
    assert store.version_dirs("deepfm") == [3, 4, 5]
    assert store.published_card("deepfm") is not None


def test_an_unsupported_storage_scheme_is_one_line_and_exit_2(spark, capsys):
    from jobs.cli import main

    assert main(["tables", "--master", "local[2]", "--warehouse", "ftp://host/warehouse"]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        "recpipe tables: error: ftp://host/warehouse: unsupported storage scheme ftp:// (use a local path, s3://, "
        "s3a://, gs://, abfss://, az:// or hdfs://)"
    )
