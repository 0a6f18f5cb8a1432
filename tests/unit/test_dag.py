"""The DAG's wiring and the steps' specs (source, delivery, resolver) and the display tables
(pipeline/headlines.py) are consistent, and the store evaluates a Resolver by its generic query, with no step
named in the runner or the store."""
from __future__ import annotations

from pathlib import Path

from contract.artifacts import Artifact
from contract.component_spec import ComponentSpec
from pipeline import dag, headlines
from pipeline.metadata import MetadataStore


def test_declarations_name_real_outputs():
    outputs = {f"{step.name}.{output}" for step in dag.STEPS for output in step.spec.outputs}
    headline = headlines.headline_table()
    assert set(headline) == set(headlines.HEADLINES)
    for step in dag.STEPS:
        for source in step.inputs.values():
            assert (source.artifact if isinstance(source, dag.Resolver) else source) in outputs
    for column in headlines.RUN_COLUMNS.values():
        output, prop = column.split(".")
        assert prop in headline[output], column
    assert headlines.PRODUCT in outputs and headlines.VOCABULARY in outputs
    assert [step.name for step in dag.STEPS if step.spec.source] == ["ingest"]
    assert dag.source_step().spec.external is not None  # its fingerprint is the run's data fingerprint
    for step in dag.delivering_steps():
        output, prop = step.spec.delivers.split(".")
        assert output in step.spec.outputs and prop in headline[output]
    for resolver in dag.resolvers():
        assert resolver.artifact in outputs and resolver.judged_by in outputs
        if resolver.judged_by == resolver.artifact:  # the newest artifact with its own property `where`
            assert resolver.where in headline[resolver.artifact.split(".")[1]]
            continue
        judge = dag.step_named(resolver.judged_by.split(".")[0])
        assert resolver.artifact in judge.inputs.values()  # the judge consumes what it judges


def _execute(store: MetadataStore, run_id: str, step: str, inputs: dict[str, int],
             outputs: dict[str, tuple[str, dict]], tmp_path: Path) -> dict[str, int]:
    execution = store.start_execution(run_id, step, "key", "code", {})
    published = {}
    for name, (content, properties) in outputs.items():
        folder = tmp_path / run_id / step / name
        folder.mkdir(parents=True)
        # the content stands in for a fingerprint
        published[name] = (Artifact(name, folder, properties), content)
    return store.complete_execution(execution, tmp_path / run_id / step, inputs, published)


def test_served_resolver_follows_the_highest_served_version_not_the_newest_blessing(tmp_path):
    """SERVED_MODEL: the model whose push published the highest complete version of the serving folder (after
    a rollback, the model rolled back to), passing over an excluded candidate; SERVED_BLESSINGS: the last
    N."""
    import types

    from library.folder_layouts import serving_version_dir
    store = MetadataStore(tmp_path / "metadata.sqlite")
    serving = tmp_path / "serving"
    config = types.SimpleNamespace(
        serving_dir=lambda: serving, evaluator=types.SimpleNamespace(anchor_versions=2)
    )
    resolver = dag.SERVED_MODEL
    # nothing served yet: the input is absent
    assert resolver.resolve(store, dag.STEPS, config=config) is None

    def publish(version: int) -> Path:
        folder = serving_version_dir(serving, version)
        folder.mkdir(parents=True)
        (folder / "saved_model.pb").write_bytes(b"model")
        return folder

    def run(run_id: str, model: str, version: int | None, model_id: int | None = None) -> tuple[int, int]:
        store.start_run(run_id, "run", {}, None)
        if model_id is None:
            model_id = _execute(store, run_id, "trainer", {}, {"model": (model, {})}, tmp_path)["model"]
        blessing = _execute(store, run_id, "evaluator", {"model": model_id},
                            {"blessing": (f"b-{run_id}", {"blessed": True})}, tmp_path)["blessing"]
        pushed = {"pushed": version is not None, "version": version,
                  "path": str(publish(version)) if version else None}
        _execute(store, run_id, "pusher", {"model": model_id, "blessing": blessing},
                 {"pushed_model": (f"p-{run_id}", pushed)}, tmp_path)
        return model_id, blessing

    first, first_blessing = run("r1", "model-1", 1)
    second, second_blessing = run("r2", "model-2", 2)
    assert resolver.resolve(store, dag.STEPS, config=config).id == second
    assert resolver.resolve(store, dag.STEPS, config=config, exclude_fingerprint="model-2").id == first
    # blessed, not pushed (a pinned run, a failed push): not served, not the baseline
    run("r3", "model-3", None)
    assert resolver.resolve(store, dag.STEPS, config=config).id == second
    run("r4", "", 3, model_id=first)  # a rollback: version 3 is model 1 again
    assert resolver.resolve(store, dag.STEPS, config=config).id == first
    served = dag.SERVED_BLESSINGS.resolve(store, dag.STEPS, config=config)
    assert [(b.properties["served_version"]) for b in served] == [3, 2]
    assert served[1].id == second_blessing
    # Without a configuration (gc, and the runner asking whether the store knows any before it takes the
    # version folder itself): the newest pushed model on record.
    assert resolver.resolve(store, dag.STEPS).id == first
    store.close()


def test_own_output_resolver_matches_properties_and_skips_what_the_same_inputs_computed(tmp_path):
    """LATEST_TUNED_HYPERPARAMETERS: the newest tuned output with the same search fingerprint, never one the
    tuner computed from the inputs it has now (an unchanged re-run resolves what the first run resolved)."""
    from components.tuner import executor as tuner
    from contract.config_loading import load_config
    store = MetadataStore(tmp_path / "metadata.sqlite")
    resolver = dag.LATEST_TUNED_HYPERPARAMETERS
    config = load_config()
    space = tuner.search_fingerprint(config.tuner)

    def search(run_id: str, examples: str, **properties) -> tuple[int, int]:
        store.start_run(run_id, "run", {}, None)
        examples_id = _execute(store, run_id, "transform", {}, {"transformed_examples": (examples, {})},
                               tmp_path)["transformed_examples"]
        found = _execute(
            store,
            run_id,
            "tuner",
            {"transformed_examples": examples_id},
            {
                "best_hyperparameters": (
                    f"hp-{run_id}",
                    {"tuned": True, "search_fingerprint": space, **properties},
                )
            },
            tmp_path,
        )
        return found["best_hyperparameters"], examples_id

    assert resolver.resolve(store, dag.STEPS, config=config) is None
    first, _ = search("r1", "data-1")
    search("r2", "data-2", search_fingerprint="another space")
    search("r3", "data-3", tuned=False)  # --no-tune: defaults, not a search
    assert resolver.resolve(store, dag.STEPS, config=config).id == first
    second, _ = search("r4", "data-4")
    assert resolver.resolve(store, dag.STEPS, config=config).id == second
    assert resolver.resolve(store, dag.STEPS, config=config,
                            exclude_inputs={"transformed_examples": "data-4"}).id == first
    assert resolver.resolve(store, dag.STEPS, config=config,
                            exclude_inputs={"transformed_examples": "data-9"}).id == second
    store.close()


def test_outputs_where_lists_only_deliveries_that_happened(tmp_path):
    store = MetadataStore(tmp_path / "metadata.sqlite")
    store.start_run("r1", "run", {}, None)
    pushed = _execute(
        store, "r1", "pusher", {}, {"pushed_model": ("p1", {"pushed": True, "version": 1})}, tmp_path
    )
    store.start_run("r2", "run", {}, None)
    _execute(store, "r2", "pusher", {}, {"pushed_model": ("p2", {"pushed": False})}, tmp_path)
    found = store.outputs_where("pusher", "pushed_model", "pushed")
    assert [(execution["run_id"], artifact.id) for execution, artifact in found] == [
        ("r1", pushed["pushed_model"])
    ]
    store.close()


def _judge(inputs, output_dir: Path, config, runtime):
    """A toy judging step: always satisfied; records which baseline it was given."""
    out = output_dir / "verdict"
    out.mkdir()
    baseline = inputs.get("baseline")
    return {
        "verdict": Artifact(
            "verdict", out, {"good": True, "baseline": str(baseline.uri) if baseline else None}
        )
    }


def test_the_runner_resolves_a_resolver_input_from_the_store_or_its_fallback(tmp_path):
    from support import toy_components

    from contract.config_loading import load_config
    from pipeline.runner import Runner

    served = tmp_path / "outside" / "7"
    served.mkdir(parents=True)
    resolver = dag.Resolver(
        "last_good_numbers",
        artifact="source.numbers",
        judged_by="judge.verdict",
        where="good",
        fallback=lambda config: served,
    )
    judge = ComponentSpec(__name__, executor=f"{__name__}:_judge", outputs=("verdict",),
                          config_section="evaluator")
    steps = (toy_components.STEPS[0],
             dag.Step("judge", judge, inputs={"numbers": "source.numbers", "baseline": resolver}))
    data = tmp_path / "data"
    data.mkdir()

    def run(numbers: str) -> dict:
        (data / "train.csv").write_text(numbers)
        runner = Runner(
            load_config(flags={"pipeline.root": str(tmp_path / "root"), "ingest.data": f"csv:{data}"}),
            log=lambda message: None,
            steps=steps,
        )
        try:
            result = runner.run()
        finally:
            runner.close()
        return result

    first = run("1 2 3\n")  # nothing judged yet: the fallback folder, recorded as an external artifact
    assert first.artifact("judge", "verdict").properties["baseline"] == str(served)
    second = run("4 5\n")  # the numbers the first run's judge approved
    assert second.artifact("judge", "verdict").properties["baseline"] == str(
        first.artifact("source", "numbers").uri
    )
    third = run("4 5\n")  # the same data: its own numbers are never its baseline, so it stays cached
    assert [s.state for s in third.steps] == ["cached", "cached"]


def _wiring_fault(change, tables: dict | None = None) -> str:
    """The one-line DagError that checking the DAG with one step changed (and the display tables) raises."""
    import pytest
    steps = list(dag.STEPS)
    index, replacement = change(steps)
    steps[index] = replacement
    tables = {"headlines": headlines.HEADLINES, "product": headlines.PRODUCT,
              "vocabulary": headlines.VOCABULARY, "run_columns": headlines.RUN_COLUMNS, **(tables or {})}
    with pytest.raises(dag.DagError) as error:
        dag.check_steps(tuple(steps))
        headlines.check_headlines(tuple(steps), **tables)
    assert "\n" not in str(error.value)
    return str(error.value)


def test_the_dag_is_checked_when_it_is_built():
    import dataclasses
    dag.check_steps(dag.STEPS)  # the real DAG is sound (also checked at import)
    headlines.check_headlines(dag.STEPS, headlines.HEADLINES, headlines.PRODUCT, headlines.VOCABULARY,
                              headlines.RUN_COLUMNS)
    at = {step.name: i for i, step in enumerate(dag.STEPS)}

    def changed(name, inputs=None, **spec_fields):
        def change(steps):
            step = steps[at[name]]
            spec = dataclasses.replace(step.spec, **spec_fields)
            wiring = step.inputs if inputs is None else inputs
            return at[name], dataclasses.replace(step, spec=spec, inputs=wiring)
        return change

    transform_inputs = {"examples": "ingest.examples", "schema": "validate.shema"}
    assert "input 'schema' reads 'validate.shema', which no earlier step outputs" in _wiring_fault(
        changed("transform", inputs=transform_inputs))
    assert "reads 'tuner.best_hyperparameters', which no earlier step outputs" in _wiring_fault(
        changed("validate", inputs={"examples": "ingest.examples", "hp": "tuner.best_hyperparameters"}))
    assert "output 'examples' of step 'validate' is also an output of step 'ingest'" in _wiring_fault(
        changed("validate", outputs=("schema", "statistics", "anomalies", "examples")))
    assert "delivers 'pushed_model.pushd': that property must be in its headline" in _wiring_fault(
        changed("pusher", delivers="pushed_model.pushd"))
    assert "delivers 'pushed.pushed', not one of its outputs" in _wiring_fault(
        changed("pusher", delivers="pushed.pushed"))
    wrong_judge = dataclasses.replace(dag.SERVED_MODEL, judged_by="validate.anomalies")
    evaluator_inputs = {**dag.step_named("evaluator").inputs, "baseline_model": wrong_judge}
    assert "judged by step 'validate', which does not consume 'trainer.model'" in _wiring_fault(
        changed("evaluator", inputs=evaluator_inputs))
    unknown = dataclasses.replace(dag.SERVED_MODEL, artifact="trainer.modle")
    assert "resolves 'trainer.modle', which no step outputs" in _wiring_fault(
        changed("evaluator", inputs={**dag.step_named("evaluator").inputs, "baseline_model": unknown}))
    # The display tables are checked against the DAG too.
    unchanged = changed("evaluator")
    assert "a headline for 'evaluaton', which no step outputs" in _wiring_fault(
        unchanged, {"headlines": {**headlines.HEADLINES, "evaluaton": ("accuracy",)}})
    assert "the product 'trainer.modle' is no step's output" in _wiring_fault(
        unchanged, {"product": "trainer.modle"})
    assert "run column 'blessed' shows 'blessing.blesed'" in _wiring_fault(
        unchanged, {"run_columns": {**headlines.RUN_COLUMNS, "blessed": "blessing.blesed"}})
    untuned = {**headlines.HEADLINES, "best_hyperparameters": ("architecture",)}
    assert "resolver 'latest_tuned_hyperparameters' looks for 'best_hyperparameters.tuned'" in _wiring_fault(
        unchanged, {"headlines": untuned})


def test_a_wiring_fault_fails_at_import_with_one_line(tmp_path):
    """A typo in pipeline/dag.py fails every command at once (import time), not deep inside a run."""
    import subprocess
    import sys
    source = Path(dag.__file__).read_text(encoding="utf-8")
    broken = source.replace('"validate.schema"', '"validate.schemas"', 1)
    assert broken != source
    (tmp_path / "pipeline").mkdir()
    (tmp_path / "pipeline" / "__init__.py").write_text("")
    (tmp_path / "pipeline" / "dag.py").write_text(broken, encoding="utf-8")
    script = ("import sys; sys.path.insert(0, sys.argv[1]); sys.path.insert(1, sys.argv[2])\n"
              "try:\n    import pipeline.dag\nexcept Exception as error:\n"
              "    print(type(error).__name__ + ': ' + str(error))\n")
    project = str(Path(dag.__file__).resolve().parent.parent)
    completed = subprocess.run([sys.executable, "-c", script, str(tmp_path), project], capture_output=True,
                               text=True, timeout=120)
    assert completed.stdout.strip() == (
        "DagError: pipeline DAG: step 'transform' input 'schema' reads "
        "'validate.schemas', which no earlier step outputs (known: "
        "ingest.examples, validate.anomalies, validate.schema, validate.statistics)"
    )


def test_validate_resolves_the_served_model_and_its_examples_but_not_one_trained_on_its_own_examples(
    tmp_path,
):
    """Validate's reference (SERVED_FOR_VALIDATE, SERVED_EXAMPLES): the served model and the examples its
    trainer consumed; a served model trained on the very examples validate checks now is passed over for the
    version below (an unchanged re-run after a push resolves what the first run resolved)."""
    import types

    from library.folder_layouts import serving_version_dir
    store = MetadataStore(tmp_path / "metadata.sqlite")
    serving = tmp_path / "serving"
    config = types.SimpleNamespace(serving_dir=lambda: serving)

    def week(run_id: str, version: int) -> tuple[int, int]:
        store.start_run(run_id, "run", {}, None)
        examples = _execute(store, run_id, "ingest", {}, {"examples": (f"e-{run_id}", {})}, tmp_path)[
            "examples"
        ]
        model = _execute(store, run_id, "trainer", {"examples": examples},
                         {"model": (f"m-{run_id}", {})}, tmp_path)["model"]
        blessing = _execute(store, run_id, "evaluator", {"model": model},
                            {"blessing": (f"b-{run_id}", {"blessed": True})}, tmp_path)["blessing"]
        folder = serving_version_dir(serving, version)
        folder.mkdir(parents=True)
        (folder / "saved_model.pb").write_bytes(b"model")
        _execute(store, run_id, "pusher", {"model": model, "blessing": blessing},
                 {"pushed_model": (f"p-{run_id}", {"pushed": True, "version": version, "path": str(folder)})},
                 tmp_path)
        return examples, model

    first_examples, first_model = week("r1", 1)
    second_examples, second_model = week("r2", 2)
    assert dag.SERVED_FOR_VALIDATE.resolve(store, dag.STEPS, config=config).id == second_model
    assert dag.SERVED_EXAMPLES.resolve(store, dag.STEPS, config=config).id == second_examples
    same = {"examples": "e-r2"}  # validate checking the examples the served model was trained on
    assert (
        dag.SERVED_FOR_VALIDATE.resolve(store, dag.STEPS, config=config, exclude_inputs=same).id
        == first_model
    )
    assert (
        dag.SERVED_EXAMPLES.resolve(store, dag.STEPS, config=config, exclude_inputs=same).id == first_examples
    )
    store.close()
