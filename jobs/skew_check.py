"""Training/serving skew check (spark-submit entry point; see jobs/publish_features.py):

spark-submit --master local[2] jobs/skew_check.py --config conf/demo.yaml --date 2026-01-10 [--rows 200]
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # started as a script by spark-submit: make the repo importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

if __name__ == "__main__":
    from jobs.cli import main

    sys.exit(main(["skew-check", "--spark-submit", *sys.argv[1:]]))
