"""The Airflow DAG, in Airflow's own virtualenv (make airflow): it imports cleanly and thinly, its graph
is the pipeline's, and a real `airflow dags test` runs every task to success on tiny synthetic logs."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from features.synthetic_logs import generate_logs
from jobs.cli import main

REPO = Path(__file__).resolve().parents[1]
AIRFLOW_BIN = Path(os.environ.get("RECPIPE_AIRFLOW_VENV", REPO / ".venv-airflow")) / "bin"
pytestmark = pytest.mark.usefixtures("airflow_bin")  # skips without Airflow's virtualenv; fails under CI=true

INSPECT = """
import json, sys
from airflow.dag_processing.dagbag import DagBag
bag = DagBag(dag_folder=sys.argv[1])
dag = bag.dags.get("recpipe_daily")
print(json.dumps({
    "errors": {str(k): str(v) for k, v in bag.import_errors.items()},
    "heavy_modules": sorted(m for m in ("pyspark", "tensorflow", "keras", "xgboost", "pyarrow", "deltalake")
                            if m in sys.modules),
    "schedule": str(dag.schedule), "catchup": dag.catchup, "max_active_runs": dag.max_active_runs,
    "params": sorted(dag.params.keys()),
    "tasks": {t.task_id: {"upstream": sorted(t.upstream_task_ids), "retries": t.retries,
                          "depends_on_past": t.depends_on_past, "backoff": t.retry_exponential_backoff,
                          "callback": bool(t.on_failure_callback), "type": type(t).__name__}
              for t in dag.tasks},
}))
"""


def _airflow_env(home: Path) -> dict:
    return {
        **os.environ,
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "airflow_dags"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__LOGGING__LOGGING_LEVEL": "WARNING",
        "AIRFLOW_VAR_RECPIPE_HOME": str(REPO),
        "AIRFLOW_VAR_RECPIPE_VENV": sys.prefix,
    }


def _airflow_json(arguments: list[str], env: dict) -> str:
    result = subprocess.run(
        [str(AIRFLOW_BIN / "airflow"), *arguments], capture_output=True, text=True, env=env, timeout=300
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return next(line for line in result.stdout.splitlines() if line.startswith("["))


def test_dag_imports_thinly_with_the_pipeline_graph(tmp_path):
    result = subprocess.run(
        [str(AIRFLOW_BIN / "python"), "-c", INSPECT, str(REPO / "airflow_dags")],
        capture_output=True,
        text=True,
        env=_airflow_env(tmp_path),
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    dag = json.loads(result.stdout.strip().splitlines()[-1])
    assert dag["errors"] == {} and dag["heavy_modules"] == []
    assert (dag["schedule"], dag["catchup"], dag["max_active_runs"]) == ("@daily", True, 1)
    assert {"config", "spark_master", "data_start", "samples_window_days"} <= set(dag["params"])
    tasks = dag["tasks"]
    upstream = {name: t["upstream"] for name, t in tasks.items()}
    assert upstream == {
        "wait_for_drop": [],
        "ingest": ["wait_for_drop"],
        "snapshot": ["ingest"],
        "samples": ["snapshot"],
        "gbdt": ["samples"],
        "train.wide_deep": ["gbdt"],
        "train.gbdt_lr": ["gbdt"],
        "train.deepfm": ["gbdt"],
        "compare": ["train.deepfm", "train.gbdt_lr", "train.wide_deep"],
        "export": ["compare"],
        "publish_features": ["snapshot"],
        "skew_check": ["publish_features", "samples"],
    }
    assert tasks["snapshot"]["depends_on_past"] and not tasks["ingest"]["depends_on_past"]
    assert all(t["retries"] == 2 and t["backoff"] and t["callback"] for t in tasks.values())
    assert {name for name, t in tasks.items() if t["type"] == "RecpipeJob"} == set(tasks) - {"wait_for_drop"}


EXIT_CODES = """
import json, sys
sys.path.insert(0, sys.argv[1])
from recpipe_daily import RecpipeJob
from airflow.sdk.exceptions import AirflowFailException

outcome = {}
for code in (0, 1, 2, 3, 4, 5, 6, 7, 137):
    job = RecpipeJob(task_id=f"exit_{code}", bash_command=f"exit {code}")
    try:
        outcome[code] = job._run_inline_command("bash", {}).exit_code  # the operator then retries non-zero
    except AirflowFailException as error:
        outcome[code] = "fail at once: " + str(error)
print(json.dumps(outcome))
"""


def test_only_failures_a_retry_can_fix_are_retried(tmp_path):
    result = subprocess.run(
        [str(AIRFLOW_BIN / "python"), "-c", EXIT_CODES, str(REPO / "airflow_dags")],
        capture_output=True,
        text=True,
        env=_airflow_env(tmp_path),
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    outcome = json.loads(result.stdout.strip().splitlines()[-1])
    assert outcome == {
        "0": 0,
        "1": 1,
        "3": 3,
        "5": 5,
        "6": 6,
        "7": 7,
        "137": 137,  # 3: export's skip_on_exit_code skips; 1 (a bug),
        # 5 (a concurrent writer won), 6 (Spark master unreachable), 7 (Redis unreachable), 137 (killed): retried
        "2": "fail at once: recpipe exited 2 (bad input or configuration): not retried; fix the input and clear the task",
        "4": "fail at once: recpipe exited 4 (a data quality check failed): not retried; fix the input and clear the task",
    }


TASKS = (
    "wait_for_drop",
    "ingest",
    "snapshot",
    "samples",
    "gbdt",
    "train.wide_deep",
    "train.gbdt_lr",
    "train.deepfm",
    "compare",
    "export",
    "publish_features",
    "skew_check",
)


def test_airflow_dags_test_runs_two_days_and_a_cleared_task_reuses_its_samples(
    spark, redis_server, tmp_path
):  # spark: first
    """Two logical dates through `airflow dags test`; then the first date's train and export tasks run again:
    they read the samples version the first run built (passed through XCom), not the newer one, and
    reproduce its model's metrics."""
    from jobs import artifacts
    from training.publish_gate import published_versions

    config = yaml.safe_load((REPO / "conf" / "demo.yaml").read_text())
    config["paths"] = {"raw": str(tmp_path / "raw"), "warehouse": str(tmp_path / "warehouse")}
    config["dates"] = {"start": "2026-03-01", "end": "2026-03-04"}
    # the daily warm-start challenger: each run's models start from the previous run's (the first run's: cold)
    config["training"] = {"max_epochs": 1, "verbose": 0, "warm_start": True}
    config["export"] = {"root": str(tmp_path / "serving"), "auc_floor": 0.0, "max_auc_drop": 1.0}
    config["spark"]["conf"]["spark.driver.memory"] = "1g"
    config["online_store"] = {**redis_server, "namespace": "dagtest"}
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(config))
    # late events (2%): an event of D-2 arriving in D-1's drop rebuilds the snapshot of D-2 after its publish;
    # skew_check tells those restated rows from skew (README: the online store publishes what is known on the day)
    generate_logs(
        tmp_path / "raw", start_date=dt.date(2026, 3, 1), days=4, users=300, items=60, seed=11, late_fraction=0.02
    )
    # the days before the first logical date already ran (state rolls forward from them)
    assert main(["ingest", "--config", str(path), "--start", "2026-03-01", "--end", "2026-03-02"]) == 0
    assert main(["snapshot", "--config", str(path), "--start", "2026-03-01", "--end", "2026-03-02"]) == 0
    for day in ("2026-03-01", "2026-03-02"):  # read by the two runs' skew_check (samples of D-1, store of D-2)
        assert main(["publish-features", "--config", str(path), "--date", day]) == 0

    env = _airflow_env(tmp_path / "airflow-home")
    migrate = subprocess.run(
        [str(AIRFLOW_BIN / "airflow"), "db", "migrate"], capture_output=True, text=True, env=env, timeout=600
    )
    assert migrate.returncode == 0, migrate.stderr[-2000:]
    conf = {"config": str(path), "spark_master": "local[2]", "data_start": "2026-03-01", "samples_window_days": 14}
    warehouse, serving = tmp_path / "warehouse", tmp_path / "serving"
    built = {}
    for day in ("2026-03-03", "2026-03-04"):
        run = subprocess.run(
            [str(AIRFLOW_BIN / "airflow"), "dags", "test", "recpipe_daily", day, "--conf", json.dumps(conf)],
            capture_output=True,
            text=True,
            env=env,
            timeout=1800,
        )
        assert run.returncode == 0, (run.stdout + run.stderr)[-4000:]
        built[day] = artifacts.latest_samples_version(warehouse)
    runs = json.loads(_airflow_json(["dags", "list-runs", "recpipe_daily", "-o", "json"], env))
    assert sorted((r["logical_date"][:10], r["state"]) for r in runs) == [
        ("2026-03-03", "success"),
        ("2026-03-04", "success"),
    ]
    run_ids = {r["logical_date"][:10]: r["run_id"] for r in runs}
    for day in built:
        states = json.loads(
            _airflow_json(["tasks", "states-for-dag-run", "recpipe_daily", run_ids[day], "-o", "json"], env)
        )
        assert {s["task_id"]: s["state"] for s in states} == {task: "success" for task in TASKS}
    first, second = built["2026-03-03"], built["2026-03-04"]
    assert first < second
    ranges = {
        v: json.loads((artifacts.samples_dir(warehouse, v) / "manifest.json").read_text())["range"]
        for v in (first, second)
    }
    assert ranges == {first: ["2026-03-02", "2026-03-02"], second: ["2026-03-02", "2026-03-03"]}
    for version in (first, second):  # every stage of each run read its own run's samples
        assert (
            json.loads((artifacts.gbdt_dir(warehouse, version) / "metrics.json").read_text())["samples_version"]
            == version
        )
        evaluation = json.loads((artifacts.evaluation_dir(warehouse, version) / "metrics.json").read_text())
        assert set(evaluation["models"]) == {"wide_deep", "gbdt_lr", "deepfm"}
    for model in ("wide_deep", "gbdt_lr", "deepfm"):  # the second run's challengers started from the first's
        started = {
            v: json.loads((artifacts.model_dir(warehouse, model, v) / "summary.json").read_text())["warm_started_from"]
            for v in (first, second)
        }
        assert started == {first: None, second: first}
    for model in ("wide_deep", "gbdt_lr", "deepfm"):
        assert published_versions(serving / model) == [1, 2]
        cards = [
            json.loads((serving / model / str(v) / "assets.extra" / "model_card.json").read_text()) for v in (1, 2)
        ]
        assert [c["training_data"]["samples_version"] for c in cards] == [first, second]
        assert cards[1]["champion"]["version"] == 1 and cards[1]["champion"]["status"] == "compared"

    # clear the first date's train and export: they must use the first date's samples, not the newest
    summary_path = artifacts.model_dir(warehouse, "deepfm", first) / "summary.json"
    before = json.loads(summary_path.read_text())
    for task in ("train.deepfm", "export"):
        rerun = subprocess.run(
            [
                str(AIRFLOW_BIN / "airflow"),
                "tasks",
                "test",
                "recpipe_daily",
                task,
                run_ids["2026-03-03"],
                "--task-params",
                json.dumps(conf),
            ],
            capture_output=True,
            text=True,
            env=env,
            timeout=1800,
        )
        assert rerun.returncode == 0, (rerun.stdout + rerun.stderr)[-4000:]
    after = json.loads(summary_path.read_text())
    assert after["run_id"] != before["run_id"] and after["samples_version"] == first
    # same samples, same seeds: the same epochs and the same valid AUC up to float32 summation order (TensorFlow's
    # CPU kernels reduce in thread order, so a retrain differs in the 8th digit; other samples differ by far more)
    assert after["epochs"] == before["epochs"]
    assert after["best_val_auc"] == pytest.approx(before["best_val_auc"], abs=1e-6)
    assert published_versions(serving / "deepfm") == [1, 2, 3]
    card = json.loads((serving / "deepfm" / "3" / "assets.extra" / "model_card.json").read_text())
    assert card["training_data"]["samples_version"] == first and card["training"]["run_id"] == after["run_id"]
    assert card["champion"]["version"] == 2  # judged against the newest published model, on the first date's rows
    # Not asserted: equal predictions. A retrained model in another process differed by up to 0.06 in
    # probability (TensorFlow training is not bit-reproducible across processes here), although its
    # validation AUC and epochs were the same.


RENDER = """
import json, subprocess, sys
import jinja2
sys.path.insert(0, sys.argv[1])
import recpipe_daily as module
from airflow.sdk import Param

workdir, master = sys.argv[2], sys.argv[3]
dag = module.dag
try:  # 1. the trigger form / --conf: the Param pattern refuses the value before any task runs
    dag.params.get_param("spark_master").resolve(value=master)
    refused = False
except Exception:
    refused = True

accepted = [value for value in ("local[2]", "local[*]", "local", "yarn", "spark://127.0.0.1:7077",
                                "k8s://https://10.0.0.1:6443")
            if dag.params.get_param("spark_master").resolve(value=value, suppress_exception=True) == value]


class Variables:  # what {{ var.value.get(...) }} reads in a real run
    @staticmethod
    def get(name, default=None):
        return {"recpipe_home": workdir, "recpipe_venv": workdir}.get(name, default)


# 2. even past validation, the rendered command never parses the value as shell code
task = dag.get_task("ingest")
context = {"params": {"config": "conf/demo.yaml", "spark_master": master}, "ds": "2026-03-03",
           "var": {"value": Variables}}
environment = jinja2.Environment()
command = environment.from_string(task.bash_command).render(**context)
env = {key: environment.from_string(value).render(**context) for key, value in task.env.items()}
result = subprocess.run(["bash", "-c", command], env={"PATH": "/usr/bin:/bin", **env}, cwd=workdir,
                        capture_output=True, text=True)
print(json.dumps({"refused": refused, "accepted": len(accepted), "command": command, "stdout": result.stdout, "code": result.returncode}))
"""


def test_dag_params_never_reach_the_shell_as_code(tmp_path):
    stub = tmp_path / "bin" / "spark-submit"  # stands in for the venv's spark-submit: prints its arguments
    stub.parent.mkdir()
    stub.write_text('#!/bin/bash\nfor a in "$@"; do echo "arg:$a"; done\n')
    stub.chmod(0o755)
    injection = "local[2]' ; touch PWNED ; echo '"
    result = subprocess.run(
        [str(AIRFLOW_BIN / "python"), "-c", RENDER, str(REPO / "airflow_dags"), str(tmp_path), injection],
        capture_output=True,
        text=True,
        env=_airflow_env(tmp_path / "home"),
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    outcome = json.loads(result.stdout.strip().splitlines()[-1])
    assert outcome["refused"], "the spark_master Param pattern accepted an injection string"
    assert outcome["accepted"] == 6  # local[2], local[*], local, yarn, spark://..., k8s://... still pass
    assert injection not in outcome["command"]  # the value is not in the command text at all
    assert outcome["code"] == 0 and f"arg:{injection}" in outcome["stdout"].splitlines()  # one literal argument
    assert not (tmp_path / "PWNED").exists()
