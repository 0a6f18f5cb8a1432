"""Where the project, the committed AG News sample and the end-to-end configuration are."""
from __future__ import annotations

import sys
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[2]
TESTS = PROJECT / "tests"
SAMPLE_DIR = Path(__file__).parent / "data" / "ag_news_sample"
E2E_CONFIG = Path(__file__).parent / "e2e_config.yaml"
CLI = [sys.executable, "-m", "apps.cli"]
