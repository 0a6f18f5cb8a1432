"""Beam pipeline options: the user's pass-through arguments (`--beam-arg`) plus the friendly runner flags
(`--beam-runner dask --dask-address ... --dask-workers N`), checked with Beam's own option classes.

Beam is imported inside the functions that need it: the runner asks this module for the runner flags of every
run, and a fully cached run must not pay for importing Beam."""
from __future__ import annotations

import os
import socket
import sys
import threading
import urllib.parse
from pathlib import Path
from typing import TYPE_CHECKING

# for annotations; Beam is imported when it is used
if TYPE_CHECKING:
    from apache_beam.options.pipeline_options import PipelineOptions

from contract.artifacts import ComponentError
from contract.config import REDACTED, PipelineConfig, redact_args
from contract.config_checks import ConfigError

DASK_RUNNER = "engines.dask.runner.DaskClusterRunner"
# --beam-runner direct, and any step whose flags name no runner: Beam's DirectRunner minus its Prism download
LOCAL_RUNNER = "engines.local.LocalRunner"
# The class names of a dask runner: Beam's own (refused by beam_args_problem) and this project's adapter.
DASK_RUNNER_NAMES = ("DaskRunner", "DaskClusterRunner")
# where Beam's own DaskRunner lives
BEAM_DASK_RUNNER_MODULE = "apache_beam.runners.dask.dask_runner"
# friendly names; any other runner via --beam-arg=--runner=NAME
BEAM_RUNNERS = ("direct", "dask")
# how long a step waits for a scheduler or job service before it fails
CONNECT_SECONDS = 5
# How long a step waits for a worker of an external SDK worker pool to connect (a healthy one imports Beam and
# connects in about 5 s on this loaded 2-core machine) before it fails.
WORKER_START_SECONDS = 20
# how long a Beam job on a portable runner (Flink, Spark, a job service) may run
JOB_SECONDS = 7 * 24 * 3600


def runner_args(beam_runner: str, dask_address: str, dask_workers: int, dask_worker_memory: str = "auto",
                dask_stall_seconds: float = 600.0) -> tuple[str, ...]:
    """The Beam flags the friendly runner flags stand for."""
    if beam_runner != "dask":
        return ()
    args = [f"--runner={DASK_RUNNER}", f"--dask_connection_timeout={CONNECT_SECONDS}",
            f"--dask_stall_seconds={dask_stall_seconds:g}"]
    if dask_address:
        args.append(f"--dask_client_address={dask_address}")
    else:
        args += [f"--dask_workers={dask_workers}", f"--dask_worker_memory={dask_worker_memory}"]
    return tuple(args)


def all_beam_args(config: PipelineConfig) -> tuple[str, ...]:
    """pipeline.beam_args plus the flags beam_runner and the dask_* settings stand for."""
    return (
        *runner_args(
            config.beam_runner,
            config.dask_address,
            config.dask_workers,
            config.dask_worker_memory,
            config.dask_stall_seconds,
        ),
        *config.beam_args,
    )


def check_pipeline_options(config: PipelineConfig) -> None:
    """The Beam flags of the configuration, parsed with Beam's own option classes before any step runs: an
    unknown runner or flag, or a bad value, is a ConfigError (exit 2) instead of a failure in the middle of a
    run. Beam is imported only when there are flags to check."""
    if config.beam_args:
        check_beam_args(config.beam_args)
    if config.beam_args or config.beam_runner != "direct":
        problem = beam_args_problem(all_beam_args(config))
        if problem is not None:
            raise ConfigError(f"{problem} (from --beam-arg / --beam-runner)")


def check_beam_args(beam_args: tuple[str, ...]) -> None:
    """Parses the Beam options with Beam's own option classes now, so a bad value is a configuration error
    before any work starts instead of a usage dump in the middle of a run."""
    import contextlib
    import io

    from apache_beam.options.pipeline_options import PipelineOptions
    captured = io.StringIO()
    try:
        with contextlib.redirect_stderr(captured):
            PipelineOptions(flags=list(beam_args)).get_all_options(retain_unknown_options=True)
    # argparse reports the problem on stderr, then exits
    except SystemExit:
        lines = [line for line in captured.getvalue().splitlines() if line.strip()]
        reason = lines[-1].split("error: ", 1)[-1] if lines else "invalid option"
        for secret, shown in zip(beam_args, redact_args(beam_args)):
            if secret != shown:
                reason = reason.replace(secret.partition("=")[2] or secret, REDACTED)
        raise ConfigError(f"--beam-arg: {reason}") from None


def with_log_dir(beam_args: tuple[str, ...], log_dir: Path | str) -> tuple[str, ...]:
    """The step's Beam flags plus, on dask, where a stalled step leaves the cluster's state (its own
    folder)."""
    runner = next((arg.partition("=")[2] for arg in beam_args if arg.startswith("--runner=")), "")
    return (
        (*beam_args, f"--dask_log_dir={log_dir}") if runner.endswith(DASK_RUNNER_NAMES) else tuple(beam_args)
    )


def pipeline_options(beam_args: tuple[str, ...] | list[str]) -> PipelineOptions:
    from library import beam_cached_dofn_specs
    from library.beam_cached_views import CachedViewsOptions
    beam_cached_dofn_specs.install()
    args = list(beam_args)
    names = {arg.partition("=")[0] for arg in args}
    if "--job_endpoint" in names and not names & {"--job_server_timeout", "--job-server-timeout"}:
        # Beam uses this one deadline both for reaching the job service and for the whole job's state and
        # message streams: its default (300 s) fails every portable job that runs longer with
        # DEADLINE_EXCEEDED. Reaching the service is checked below, in CONNECT_SECONDS.
        args.append(f"--job_server_timeout={JOB_SECONDS}")
    if "--runner" not in names:
        args.append(f"--runner={LOCAL_RUNNER}")
    # flags=... stops PipelineOptions from parsing sys.argv (the CLI's own flags) as Beam flags.
    options = CachedViewsOptions(flags=args, save_main_session=False)
    check_engine_reachable(options)
    return options


def beam_args_problem(beam_args: tuple[str, ...] | list[str]) -> str | None:
    """Why these Beam flags cannot work (an unknown runner or flag), or None. Checked before any step runs."""
    from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
    options = PipelineOptions(flags=list(beam_args))
    runner = options.view_as(StandardOptions).runner
    if runner:
        from apache_beam.runners.runner import create_runner

        beam_dask = (
            f"--runner={runner}: Beam's own DaskRunner cannot run these steps (it mixes the outputs of "
            "multi-output transforms); use --beam-runner dask, this project's adapter (engines/dask/)"
        )
        try:
            # also imports the runner's module, which registers its option classes
            chosen = create_runner(runner)
        except (ValueError, ImportError, AttributeError) as error:
            # Beam knows its DaskRunner by the full name only
            if runner.lower() in ("dask", "daskrunner"):
                return beam_dask
            reason = (str(error).strip().splitlines() or [""])[0][:300]
            hint = "; for dask.distributed use --beam-runner dask" if "dask" in runner.lower() else ""
            return f"Beam cannot use --runner={runner} ({type(error).__name__}: {reason}){hint}"
        # Beam's class, not this project's subclass
        if type(chosen).__module__ == BEAM_DASK_RUNNER_MODULE:
            return beam_dask
    unknown = _unknown_flags(list(beam_args))
    if unknown:
        # names only: values may be secrets
        return f"Beam does not know the flag(s) {' '.join(unknown)}"
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
    """Fails in seconds, with one line, when the dask scheduler, the job service or the external SDK worker
    pool does not answer (their clients otherwise retry for up to minutes)."""
    from apache_beam.options.pipeline_options import PortableOptions, StandardOptions
    runner = options.view_as(StandardOptions).runner or ""
    address = None
    if runner.endswith(DASK_RUNNER_NAMES):
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
    if portable.environment_type == "EXTERNAL" and portable.environment_config:
        if not _reachable(portable.environment_config):
            raise ComponentError(
                f"no Beam SDK worker pool answers at {portable.environment_config} (waited "
                f"{CONNECT_SECONDS}s): start it (python -m apache_beam.runners.worker."
                "worker_pool_main --service_port PORT, with this venv's bin first on PATH) or fix "
                "--environment_config"
            )
        check_worker_pool_starts_workers(portable.environment_config)


_pools_that_work: set[str] = set()


def _probe_control_server():
    """(the probe, whose `connected` event is set when a worker connects; the started gRPC server; its
    endpoint on localhost): a Beam control service that gives a connecting worker no work."""
    from concurrent import futures

    import grpc
    from apache_beam.portability.api import beam_fn_api_pb2_grpc, endpoints_pb2

    class Probe(beam_fn_api_pb2_grpc.BeamFnControlServicer):
        def __init__(self):
            self.connected = threading.Event()

        def Control(self, responses, context):
            self.connected.set()
            # no work: the worker's control stream ends and it exits
            return iter(())

    probe = Probe()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    beam_fn_api_pb2_grpc.add_BeamFnControlServicer_to_server(probe, server)
    endpoint = endpoints_pb2.ApiServiceDescriptor(url=f"localhost:{server.add_insecure_port('localhost:0')}")
    server.start()
    return probe, server, endpoint


def check_worker_pool_starts_workers(pool: str, seconds: float = WORKER_START_SECONDS) -> None:
    """Asks an external SDK worker pool on this machine for one worker and waits up to `seconds` for it to
    connect to a control endpoint served here; the worker is stopped again at once. A pool whose bare `python`
    cannot import Beam starts workers that die before connecting, and the job would wait minutes for them;
    this fails in `seconds` instead, once per pool and process. A pool on another machine is not probed: its
    workers may not be able to reach this machine, which Beam's own workers never need."""
    host = urllib.parse.urlparse(f"tcp://{pool}").hostname
    if pool in _pools_that_work or host not in ("localhost", "127.0.0.1", "::1", socket.gethostname()):
        return
    import grpc
    from apache_beam.portability.api import beam_fn_api_pb2, beam_fn_api_pb2_grpc

    probe, server, endpoint = _probe_control_server()
    worker_id = f"agnews-pipeline-probe-{os.getpid()}"
    try:
        with grpc.insecure_channel(pool) as channel:
            stub = beam_fn_api_pb2_grpc.BeamFnExternalWorkerPoolStub(channel)
            response = stub.StartWorker(beam_fn_api_pb2.StartWorkerRequest(
                worker_id=worker_id, control_endpoint=endpoint, logging_endpoint=endpoint,
                artifact_endpoint=endpoint, provision_endpoint=endpoint), timeout=CONNECT_SECONDS)
            started = not response.error and probe.connected.wait(seconds)
            # a worker that connected has exited by now; this removes it from the pool's books either way
            try:
                stub.StopWorker(
                    beam_fn_api_pb2.StopWorkerRequest(worker_id=worker_id), timeout=CONNECT_SECONDS
                )
            except grpc.RpcError:
                pass
    except grpc.RpcError as error:
        raise ComponentError(
            f"the Beam SDK worker pool at {pool} did not answer a request for a worker "
            f"({error.code().name}): restart it (python -m apache_beam.runners.worker."
            "worker_pool_main --service_port PORT, with this venv's bin first on PATH)"
        ) from None
    finally:
        server.stop(None)
    if not started:
        why = (response.error.strip().splitlines() or [""])[-1] if response.error else \
            f"no SDK worker connected within {seconds:.0f}s"
        venv_bin = Path(sys.executable).parent
        raise ComponentError(
            f"the Beam SDK worker pool at {pool} cannot start Beam workers ({why}): it starts "
            "each worker as a bare `python`, which must be this venv's; restart the pool with "
            f"{venv_bin} first on PATH (PATH={venv_bin}:$PATH python -m "
            "apache_beam.runners.worker.worker_pool_main --service_port PORT)"
        )
    _pools_that_work.add(pool)
