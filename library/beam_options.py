"""Beam pipeline options: the user's pass-through arguments (`--beam-arg`) plus the friendly runner flags
(`--beam-runner dask --dask-address ... --dask-workers N`), checked with Beam's own option classes.

Beam is imported inside the functions that need it: the runner asks this module for the runner flags of every
run, and a fully cached run must not pay for importing Beam."""
from __future__ import annotations

import socket
import urllib.parse

from pipeline.artifacts import ComponentError

DASK_RUNNER = "library.dask_runner.DaskRunner"
BEAM_RUNNERS = ("direct", "dask")  # friendly names; any other runner via --beam-arg=--runner=NAME
CONNECT_SECONDS = 5  # how long a step waits for a scheduler or job service before it fails


def runner_args(beam_runner: str, dask_address: str, dask_workers: int) -> tuple[str, ...]:
    """The Beam flags the friendly runner flags stand for."""
    if beam_runner != "dask":
        return ()
    args = [f"--runner={DASK_RUNNER}", f"--dask_connection_timeout={CONNECT_SECONDS}"]
    args.append(f"--dask_client_address={dask_address}" if dask_address else f"--dask_workers={dask_workers}")
    return tuple(args)


def pipeline_options(beam_args: tuple[str, ...] | list[str]) -> PipelineOptions:
    from apache_beam.options.pipeline_options import PipelineOptions
    # flags=... stops PipelineOptions from parsing sys.argv (the CLI's own flags) as Beam flags.
    options = PipelineOptions(flags=list(beam_args), save_main_session=False)
    check_engine_reachable(options)
    return options


def beam_args_problem(beam_args: tuple[str, ...] | list[str]) -> str | None:
    """Why these Beam flags cannot work (an unknown runner or flag), or None. Checked before any step runs."""
    from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
    options = PipelineOptions(flags=list(beam_args))
    runner = options.view_as(StandardOptions).runner
    if runner:
        from apache_beam.runners.runner import create_runner
        try:
            create_runner(runner)  # also imports the runner's module, which registers its option classes
        except (ValueError, ImportError, AttributeError) as error:
            reason = (str(error).strip().splitlines() or [""])[0][:300]
            hint = "; for dask.distributed use --beam-runner dask" if "dask" in runner.lower() else ""
            return f"Beam cannot use --runner={runner} ({type(error).__name__}: {reason}){hint}"
    if runner == DASK_RUNNER or (runner or "").endswith("DaskRunner"):
        import library.dask_runner  # noqa: F401 - registers --dask_workers, --dask_reshuffle_partitions
    unknown = _unknown_flags(list(beam_args))
    if unknown:
        return f"Beam does not know the flag(s) {' '.join(unknown)}"  # names only: values may be secrets
    return None


def _unknown_flags(flags: list[str]) -> list[str]:
    from apache_beam.options.pipeline_options import PipelineOptions, _BeamArgumentParser
    parser = _BeamArgumentParser(allow_abbrev=False)
    # What PipelineOptions.get_all_options does, which otherwise only logs "Discarding unparseable args".
    for cls in {str(cls): cls for cls in PipelineOptions.__subclasses__()}.values():
        cls._add_argparse_args(parser)
    _, unknown = parser.parse_known_args(flags)
    return [flag.partition("=")[0] for flag in unknown if flag.startswith("--")]


def _reachable(address: str) -> bool:
    parsed = urllib.parse.urlparse(address if "://" in address else f"tcp://{address}")
    if not parsed.hostname or not parsed.port:
        return False
    try:
        socket.create_connection((parsed.hostname, parsed.port), timeout=CONNECT_SECONDS).close()
        return True
    except OSError:
        return False


def check_engine_reachable(options: PipelineOptions) -> None:
    """Fails in seconds, with one line, when the dask scheduler, the job service or the external SDK worker pool
    does not answer (their clients otherwise retry for up to minutes)."""
    from apache_beam.options.pipeline_options import PortableOptions, StandardOptions
    runner = options.view_as(StandardOptions).runner or ""
    address = None
    if runner.endswith("DaskRunner"):
        from apache_beam.runners.dask.dask_runner import DaskOptions
        address = options.view_as(DaskOptions).address
    if address and not _reachable(address):
        raise ComponentError(f"no dask scheduler answers at {address} (waited {CONNECT_SECONDS}s): start one "
                             "(`dask scheduler`, then `dask worker ADDRESS` on each machine) or leave out "
                             "--dask-address to run a local cluster")
    portable = options.view_as(PortableOptions)
    if runner.endswith("PortableRunner") and portable.job_endpoint and portable.job_endpoint != "embed" \
            and not _reachable(portable.job_endpoint):
        raise ComponentError(f"no Beam job service answers at {portable.job_endpoint} (waited "
                             f"{CONNECT_SECONDS}s): start it (python -m "
                             "apache_beam.runners.portability.local_job_service_main --port PORT) or fix "
                             "--job_endpoint")
    if portable.environment_type == "EXTERNAL" and portable.environment_config \
            and not _reachable(portable.environment_config):
        raise ComponentError(f"no Beam SDK worker pool answers at {portable.environment_config} (waited "
                             f"{CONNECT_SECONDS}s): start it (python -m apache_beam.runners.worker.worker_pool_main "
                             "--service_port PORT, with this venv's bin first on PATH) or fix --environment_config")
