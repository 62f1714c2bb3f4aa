"""A real Spark standalone cluster on 127.0.0.1 for tests and bench/cluster_bench.py: one master and one
worker started from the pyspark installation (spark-class ...deploy.master.Master / ...deploy.worker.Worker),
random free ports, web UIs on random ports, everything under one directory; stop() ends both processes.

Executors run `executor_python`, a wrapper around this venv's Python that starts it with -S (no site
initialisation, so the editable install's finder of recpipe is never installed) and only the venv's
site-packages on PYTHONPATH: the third-party dependencies are there, recpipe is not, as on a cluster whose
image has the dependencies but not the project. The worker runs from a directory outside the repo.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

import pyspark

SPARK_HOME = Path(pyspark.__file__).parent


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def write_executor_python(path: Path) -> Path:
    """The executors' interpreter: this Python with its dependencies but without the project."""
    site_packages = sysconfig.get_paths()["purelib"]
    path.write_text(
        "#!/bin/sh\n"
        "# Python with the venv's packages but not recpipe: -S skips site (and so the editable finder)\n"
        f'PYTHONPATH="${{PYTHONPATH:+$PYTHONPATH:}}{site_packages}"\n'
        "export PYTHONPATH\n"
        f'exec "{sys.executable}" -S "$@"\n'
    )
    path.chmod(0o755)
    return path


class StandaloneCluster:
    def __init__(self, root: Path, cores: int = 2, memory: str = "2g"):
        self.root, self.cores, self.memory = Path(root), cores, memory
        self.root.mkdir(parents=True, exist_ok=True)
        self.processes: list[subprocess.Popen] = []
        self.port = free_port()
        self.url = f"spark://127.0.0.1:{self.port}"
        self.executor_python = write_executor_python(self.root / "executor-python")

    def _env(self) -> dict:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "PYSPARK", "SPARK_"))}
        env.update(
            {
                "SPARK_HOME": str(SPARK_HOME),
                "SPARK_LOCAL_IP": "127.0.0.1",
                "SPARK_LOG_DIR": str(self.root),
                "SPARK_WORKER_DIR": str(self.root / "work"),
                "PYSPARK_PYTHON": str(self.executor_python),
                "SPARK_DAEMON_MEMORY": "512m",
            }
        )
        return env

    def _start(self, name: str, args: list[str], ready: str, timeout: float = 120) -> None:
        log = self.root / f"{name}.log"
        with open(log, "wb") as out:
            process = subprocess.Popen(
                [str(SPARK_HOME / "bin" / "spark-class"), *args],
                cwd=self.root,
                env=self._env(),
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.processes.append(process)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if ready in log.read_text(errors="replace"):
                return
            if process.poll() is not None:
                break
            time.sleep(0.3)
        raise RuntimeError(f"Spark {name} did not start (see {log}): {log.read_text(errors='replace')[-2000:]}")

    def start(self) -> "StandaloneCluster":
        (self.root / "work").mkdir(parents=True, exist_ok=True)
        try:
            self._start(
                "master",
                [
                    "org.apache.spark.deploy.master.Master",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(self.port),
                    "--webui-port",
                    "0",
                ],
                "I have been elected leader",
            )
            self._start(
                "worker",
                [
                    "org.apache.spark.deploy.worker.Worker",
                    "--host",
                    "127.0.0.1",
                    "--cores",
                    str(self.cores),
                    "--memory",
                    self.memory,
                    "--webui-port",
                    "0",
                    "--work-dir",
                    str(self.root / "work"),
                    self.url,
                ],
                "Successfully registered with master",
            )
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        for process in reversed(self.processes):
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
                try:
                    process.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    os.killpg(process.pid, signal.SIGKILL)
                    process.wait()
        self.processes.clear()

    def __enter__(self) -> "StandaloneCluster":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
