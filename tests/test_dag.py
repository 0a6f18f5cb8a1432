"""The DAG's declarations (headline table, source, delivery, resolver) are consistent, and the store evaluates a
Resolver by its generic query, with no step named in the runner or the store."""
from __future__ import annotations

from pathlib import Path

from pipeline import dag
from contract.artifacts import Artifact
from pipeline.metadata import MetadataStore


def test_declarations_name_real_outputs():
    outputs = {f"{step.name}.{output}" for step in dag.STEPS for output in step.outputs}
    headline = dag.headline_table()
    assert set(headline) == {output for step in dag.STEPS for output in step.headline}
    for step in dag.STEPS:
        assert set(step.headline) <= set(step.outputs), step.name
        for source in step.inputs.values():
            assert (source.artifact if isinstance(source, dag.Resolver) else source) in outputs
    for column in dag.RUN_COLUMNS.values():
        output, prop = column.split(".")
        assert prop in headline[output], column
    assert dag.PRODUCT in outputs
    assert [step.name for step in dag.STEPS if step.source] == ["ingest"]
    assert dag.source_step().external is not None  # its fingerprint is the run's data fingerprint
    for step in dag.delivering_steps():
        output, prop = step.delivers.split(".")
        assert output in step.outputs and prop in step.headline[output]
    for resolver in dag.resolvers():
        assert resolver.artifact in outputs
        if not resolver.judged_by:  # the newest artifact with its own property `where`: declared in its headline
            step, output = resolver.artifact.split(".")
            assert resolver.where in dag.step_named(step).headline[output]
            continue
        assert resolver.judged_by in outputs
        judge = dag.step_named(resolver.judged_by.split(".")[0])
        assert resolver.artifact in judge.inputs.values()  # the judge consumes what it judges


def _execute(store: MetadataStore, run_id: str, step: str, inputs: dict[str, int],
             outputs: dict[str, tuple[str, dict]], tmp_path: Path) -> dict[str, int]:
    execution = store.start_execution(run_id, step, "key", "code", {})
    published = {}
    for name, (content, properties) in outputs.items():
        folder = tmp_path / run_id / step / name
        folder.mkdir(parents=True)
        published[name] = (Artifact(name, folder, properties), content)  # the content stands in for a fingerprint
    return store.complete_execution(execution, tmp_path / run_id / step, inputs, published)


def test_resolver_finds_the_newest_judged_artifact_and_never_the_candidate_itself(tmp_path):
    store = MetadataStore(tmp_path / "metadata.sqlite")
    resolver = dag.LATEST_BLESSED_MODEL
    assert resolver.resolve(store, dag.STEPS) is None  # nothing judged yet: the input is simply absent

    def run(run_id: str, model: str, blessed: bool, baseline: int | None = None) -> int:
        store.start_run(run_id, "run", {}, None)
        model_id = _execute(store, run_id, "trainer", {}, {"model": (model, {})}, tmp_path)["model"]
        inputs = {"model": model_id, **({"baseline_model": baseline} if baseline else {})}
        _execute(store, run_id, "evaluator", inputs, {"blessing": (f"b-{run_id}", {"blessed": blessed})}, tmp_path)
        return model_id

    first = run("r1", "model-1", blessed=True)
    assert resolver.resolve(store, dag.STEPS).id == first
    assert resolver.resolve(store, dag.STEPS, exclude_fingerprint="model-1") is None
    # Blessed with the first model as its baseline: the newer candidate is the answer, never its baseline.
    second = run("r2", "model-2", blessed=True, baseline=first)
    assert resolver.resolve(store, dag.STEPS).id == second
    assert resolver.resolve(store, dag.STEPS, exclude_fingerprint="model-2").id == first
    run("r3", "model-3", blessed=False, baseline=second)  # not blessed: ignored
    assert resolver.resolve(store, dag.STEPS).id == second
    store.mark_deleted([second])  # a deleted artifact cannot be a baseline
    assert resolver.resolve(store, dag.STEPS).id == first
    store.close()


def test_outputs_where_lists_only_deliveries_that_happened(tmp_path):
    store = MetadataStore(tmp_path / "metadata.sqlite")
    store.start_run("r1", "run", {}, None)
    pushed = _execute(store, "r1", "pusher", {}, {"pushed_model": ("p1", {"pushed": True, "version": 1})}, tmp_path)
    store.start_run("r2", "run", {}, None)
    _execute(store, "r2", "pusher", {}, {"pushed_model": ("p2", {"pushed": False})}, tmp_path)
    found = store.outputs_where("pusher", "pushed_model", "pushed")
    assert [(execution["run_id"], artifact.id) for execution, artifact in found] == [("r1", pushed["pushed_model"])]
    store.close()


def _judge(inputs, output_dir: Path, config, runtime):
    """A toy judging step: always satisfied; records which baseline it was given."""
    out = output_dir / "verdict"
    out.mkdir()
    baseline = inputs.get("baseline")
    return {"verdict": Artifact("verdict", out, {"good": True, "baseline": str(baseline.uri) if baseline else None})}


def test_the_runner_resolves_a_resolver_input_from_the_store_or_its_fallback(tmp_path):
    import toy_components
    from contract.config import load_config
    from pipeline.runner import Runner

    served = tmp_path / "outside" / "7"
    served.mkdir(parents=True)
    resolver = dag.Resolver("last_good_numbers", artifact="source.numbers", judged_by="judge.verdict", where="good",
                            fallback=lambda config: served)
    steps = (toy_components.STEPS[0],
             dag.Step("judge", _judge, inputs={"numbers": "source.numbers", "baseline": resolver},
                      outputs=("verdict",), config_section="evaluator"))
    data = tmp_path / "data"
    data.mkdir()

    def run(numbers: str) -> dict:
        (data / "train.csv").write_text(numbers)
        runner = Runner(load_config(flags={"pipeline.root": str(tmp_path / "root"), "ingest.data": f"csv:{data}"}),
                        log=lambda message: None, steps=steps)
        try:
            result = runner.run()
        finally:
            runner.close()
        return result

    first = run("1 2 3\n")  # nothing judged yet: the fallback folder, recorded as an external artifact
    assert first.artifact("judge", "verdict").properties["baseline"] == str(served)
    second = run("4 5\n")  # the numbers the first run's judge approved
    assert second.artifact("judge", "verdict").properties["baseline"] == str(first.artifact("source", "numbers").uri)
    third = run("4 5\n")  # the same data: its own numbers are never its baseline, so it stays cached
    assert [s.state for s in third.steps] == ["cached", "cached"]
