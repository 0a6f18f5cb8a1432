"""The runner of --beam-runner direct (the default): Beam's DirectRunner without its first try on Prism.

Beam 2.77's DirectRunner hands each batch pipeline to Prism first: a Go job server it downloads from GitHub
into ~/.apache_beam/cache on first use, and starts as a process of its own. So a step on a machine with
internet wrote outside the pipeline root and ran on an engine fetched at run time; one without it tried the
download for every pipeline and left a gRPC worker-pool server behind each time; where connections to GitHub
hang, every pipeline waited for the download's timeout. Then it falls back to what this runner does at once:
the FnApiRunner in this process, or the BundleBasedDirectRunner for what that cannot run."""
from __future__ import annotations

from apache_beam.runners.direct.direct_runner import SwitchingDirectRunner


class LocalRunner(SwitchingDirectRunner):
    """Beam's DirectRunner, never on Prism."""

    # Beam's DirectRunner reads this flag in one place only: true skips the Prism try (Prism does not run
    # interactive pipelines). Tied to Beam 2.77, like the dask adapter; tests/unit/test_local_runner.py.
    _is_interactive = True
