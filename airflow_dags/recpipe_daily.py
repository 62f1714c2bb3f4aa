"""recpipe_daily: one run per logical date D, when the log drop of D has arrived.

    wait_for_drop → ingest → snapshot → samples → gbdt → train.{wide_deep, gbdt_lr, deepfm} → compare → export
                               snapshot → publish_features ─┐
                                                  samples ──┴→ skew_check

publish_features writes the features as of D into the Redis online store (recpipe publish-features);
skew_check compares the samples of D-1 with requests built from the store published for D-2 (kept by
online_store.keep_versions) and fails the run naming the feature on a mismatch (exit 4).

Every task runs a jobs/ entry point of the pipeline's own virtualenv (spark-submit for the Spark jobs,
python for the TensorFlow ones), so this file imports nothing heavy and Airflow lives in a venv of its
own (`make airflow`). Each task is idempotent for its logical date: ingest and snapshot replace D's
partitions, samples replace their date window, gbdt/train/compare are keyed by the samples version
that the run's samples task produced (passed explicitly through XCom), export does not publish a
training run twice, and a publish rerun rewrites no unchanged entity.

Airflow Variables (read at run time, never at parse time):
    recpipe_home           the project checkout (jobs/, conf/); default /opt/recpipe
    recpipe_venv           the pipeline virtualenv; default <recpipe_home>/.venv
    recpipe_alert_webhook  optional URL; the failure callback POSTs a JSON line to it
DAG params (trigger form or `airflow dags test --conf`): config, spark_master, data_start,
samples_window_days.
"""

from __future__ import annotations

import datetime as dt
import json
import logging

import pendulum
from airflow.providers.standard.operators.bash import BashOperator
from airflow.sdk import DAG, Param, TaskGroup, task

log = logging.getLogger(__name__)

# DAG params and Variables reach the shell only as environment variables, expanded inside double quotes
# ("$RECPIPE_SPARK_MASTER"): bash never parses their text as code, whatever a triggered run passes.
# The params are also validated by their Param patterns before a run starts.
HOME = "{{ var.value.get('recpipe_home', '/opt/recpipe') }}"
VENV = "{{ var.value.get('recpipe_venv', var.value.get('recpipe_home', '/opt/recpipe') ~ '/.venv') }}"
ENV = {
    "RECPIPE_HOME": HOME,
    "RECPIPE_VENV": VENV,
    "RECPIPE_CONFIG": "{{ params.config }}",
    "RECPIPE_SPARK_MASTER": "{{ params.spark_master }}",
    "PYSPARK_PYTHON": f"{VENV}/bin/python",
    "PYSPARK_DRIVER_PYTHON": f"{VENV}/bin/python",
}
SPARK_SUBMIT = 'cd "$RECPIPE_HOME" && "$RECPIPE_VENV/bin/spark-submit" --master "$RECPIPE_SPARK_MASTER"'
PYTHON = 'cd "$RECPIPE_HOME" && "$RECPIPE_VENV/bin/python"'
CONFIG = '--config "$RECPIPE_CONFIG"'
SPARK_MASTER_PATTERN = r"^(local(\[([0-9]+|\*)(, *[0-9]+)?\])?|yarn|spark://[A-Za-z0-9.,:_-]+|k8s://[A-Za-z0-9.:/_-]+)$"
CONFIG_PATTERN = r"^[A-Za-z0-9_./-]+\.ya?ml$"
DATE_PATTERN = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$"
# samples of the days before D (D's own clicks can land after midnight, in D+1's drop): a window of
# samples_window_days ending on D-1, never before the day after the first day of data
SAMPLES_START = "{{ [macros.ds_add(ds, -params.samples_window_days), macros.ds_add(params.data_start, 1)] | max }}"
SAMPLES_END = "{{ macros.ds_add(ds, -1) }}"
# Run contract: the samples task prints `samples_version=N` as its last stdout line (BashOperator pushes it
# to XCom); gbdt, train, compare and export of the same run read exactly that version, so clearing an old
# run's train or export task retrains or republishes on that run's data, never on newer samples.
# The value reaches the shell as an environment variable too, and `recpipe` parses it as an integer.
SAMPLES_VERSION = "{{ ti.xcom_pull(task_ids='samples') | replace('samples_version=', '') }}"
WITH_SAMPLES_VERSION = {**ENV, "RECPIPE_SAMPLES_VERSION": SAMPLES_VERSION}
VERSION = '--samples-version "$RECPIPE_SAMPLES_VERSION"'
# spark-submit logs to stderr, which BashOperator merges into the output it reads its last line from:
# keep the driver's stdout aside and repeat its last line at the very end (pipefail keeps the exit code)
LAST_STDOUT_LINE = (
    'set -o pipefail; out=$(mktemp); trap \'rm -f "$out"\' EXIT; {command} | tee "$out" && tail -n 1 "$out"'
)
TRAINED_MODELS = ("wide_deep", "gbdt_lr", "deepfm")
EXIT_REFUSED = 3  # recpipe export: the quality gate said no; nothing was published


class RecpipeJob(BashOperator):
    """A recpipe command whose exit code says whether a retry can help: 2 (bad input or config) and 4
    (a data quality check failed) fail the task at once, without retries, because the same input gives
    the same answer (fix the input, then clear the task); 3 (export refused by the gate) skips; any
    other failure (1 a bug or a lost executor, 5 another writer won a race, 6 the Spark master is
    unreachable, 7 the Redis online store is unreachable, a kill, a full disk) is retried with exponential
    backoff."""

    NOT_RETRIED = {2: "bad input or configuration", 4: "a data quality check failed"}

    def __init__(self, **kwargs):
        # params and Variables reach the command only as environment variables (see ENV)
        super().__init__(**{"env": ENV, "append_env": True, **kwargs})

    def _run_inline_command(self, bash_path: str, env: dict):
        from airflow.sdk.exceptions import AirflowFailException

        result = super()._run_inline_command(bash_path, env)
        if result.exit_code in self.NOT_RETRIED:
            raise AirflowFailException(
                f"recpipe exited {result.exit_code} ({self.NOT_RETRIED[result.exit_code]}): "
                f"not retried; fix the input and clear the task"
            )
        return result


def notify_failure(context) -> None:
    """Failure hook: one structured log line, and a POST to recpipe_alert_webhook when it is set."""
    from airflow.sdk import Variable

    ti = context["task_instance"]
    message = {
        "dag": ti.dag_id,
        "task": ti.task_id,
        "logical_date": str(context.get("logical_date")),
        "try": ti.try_number,
        "error": str(context.get("exception"))[:500],
    }
    log.error("recpipe task failed: %s", json.dumps(message))
    url = Variable.get("recpipe_alert_webhook", default=None)
    if url:
        import urllib.request

        request = urllib.request.Request(
            url, data=json.dumps(message).encode(), method="POST", headers={"Content-Type": "application/json"}
        )
        try:
            urllib.request.urlopen(request, timeout=10)
        except OSError as error:  # an alert that cannot be delivered must not hide the task's own failure
            log.warning("could not deliver the failure alert: %s", error)


default_args = {
    "owner": "recpipe",
    "retries": 2,
    "retry_delay": dt.timedelta(minutes=5),
    "retry_exponential_backoff": True,
    "max_retry_delay": dt.timedelta(hours=1),
    "on_failure_callback": notify_failure,
}

with DAG(
    dag_id="recpipe_daily",
    description="daily feature snapshots, samples, GBDT and ranking models, published for TF Serving",
    schedule="@daily",
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=True,  # backfills: one run per missed day, in order (max_active_runs=1)
    max_active_runs=1,
    dagrun_timeout=dt.timedelta(hours=12),
    default_args=default_args,
    params={
        "config": Param(
            "conf/demo.yaml",
            type="string",
            pattern=CONFIG_PATTERN,
            description="pipeline YAML, relative to recpipe_home (letters, digits, _ . / -)",
        ),
        "spark_master": Param(
            "local[2]",
            type="string",
            pattern=SPARK_MASTER_PATTERN,
            description="spark-submit --master: local[N], yarn, spark://host:port, k8s://...",
        ),
        "data_start": Param("2026-01-01", type="string", pattern=DATE_PATTERN, description="first day with a log drop"),
        "samples_window_days": Param(14, type="integer", minimum=1, description="days of samples per training"),
    },
    tags=["recpipe"],
    doc_md=__doc__,
) as dag:

    @task.sensor(task_id="wait_for_drop", poke_interval=300, timeout=6 * 3600, mode="reschedule")
    def wait_for_drop(params=None, ds=None) -> bool:
        """True once <paths.raw>/events/dt=D/_SUCCESS exists (the drop is complete)."""
        from pathlib import Path

        import yaml
        from airflow.sdk import Variable

        home = Path(Variable.get("recpipe_home", default="/opt/recpipe"))
        config = yaml.safe_load((home / params["config"]).read_text())
        marker = home / config["paths"]["raw"] / "events" / f"dt={ds}" / "_SUCCESS"
        log.info("waiting for %s", marker)
        return marker.exists()

    ingest = RecpipeJob(task_id="ingest", bash_command=f"{SPARK_SUBMIT} jobs/ingest.py {CONFIG} --date {{{{ ds }}}}")
    snapshot = RecpipeJob(
        task_id="snapshot",
        depends_on_past=True,
        bash_command=f"{SPARK_SUBMIT} jobs/build_snapshot.py {CONFIG} --date {{{{ ds }}}}",
    )
    samples = RecpipeJob(
        task_id="samples",
        bash_command=LAST_STDOUT_LINE.format(
            command=(f"{SPARK_SUBMIT} jobs/build_samples.py {CONFIG} --start {SAMPLES_START} --end {SAMPLES_END}")
        ),
    )
    gbdt = RecpipeJob(
        task_id="gbdt", env=WITH_SAMPLES_VERSION, bash_command=f"{SPARK_SUBMIT} jobs/train_gbdt.py {CONFIG} {VERSION}"
    )
    with TaskGroup("train", tooltip="the TensorFlow models, in parallel") as train:
        for model in TRAINED_MODELS:
            RecpipeJob(
                task_id=model,
                env=WITH_SAMPLES_VERSION,
                bash_command=f"{PYTHON} jobs/train_models.py {CONFIG} --model {model} {VERSION}",
            )
    compare = RecpipeJob(
        task_id="compare", env=WITH_SAMPLES_VERSION, bash_command=f"{PYTHON} jobs/evaluate_models.py {CONFIG} {VERSION}"
    )
    export = RecpipeJob(
        task_id="export",
        skip_on_exit_code=EXIT_REFUSED,
        env=WITH_SAMPLES_VERSION,
        bash_command=(f"{PYTHON} jobs/export_model.py {CONFIG} --model {','.join(TRAINED_MODELS)} {VERSION}"),
    )

    publish_features = RecpipeJob(
        task_id="publish_features",
        bash_command=(f"{SPARK_SUBMIT} jobs/publish_features.py {CONFIG} --date {{{{ ds }}}}"),
    )
    skew_check = RecpipeJob(
        task_id="skew_check", bash_command=(f"{SPARK_SUBMIT} jobs/skew_check.py {CONFIG} --date {SAMPLES_END}")
    )

    wait_for_drop() >> ingest >> snapshot >> samples >> gbdt >> train >> compare >> export
    snapshot >> publish_features
    [publish_features, samples] >> skew_check
