"""`agnews-pipeline gc` (deletes the artifacts no kept run or pushed model needs, by the retention policy),
`rollback` (serves an earlier version's model again, as a new highest version) and `embeddings` (trains
Word2Vec vectors on a run's train split, for --pretrained-embeddings)."""
from __future__ import annotations

from pathlib import Path

from apps.cli.exit_codes import EXIT_OK
from apps.cli.utils import UsageError, check_root, library_output
from contract.config_checks import ConfigError
from pipeline.logs import Console


def cmd_embeddings(args, config, console: Console) -> int:
    from library import embeddings
    from pipeline.views import run_train_text_source
    for name in ("dim", "window", "min_count", "word2vec_epochs"):
        if getattr(args, name) < 1:
            raise ConfigError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    out = Path(args.out)
    if out.suffix not in embeddings.OUTPUT_SUFFIXES:
        raise ConfigError(
            f"--out must end in one of {', '.join(embeddings.OUTPUT_SUFFIXES)}, got {out.name!r}"
        )
    examples_dir, transform = run_train_text_source(config.pipeline_root(), args.from_run)
    with library_output(args, console):
        sentences = embeddings.tokenized_split(examples_dir, "train", transform["text_features"],
                                               transform["max_length"])
        vectors = embeddings.train_word2vec(sentences, dimension=args.dim, window=args.window,
                                            min_count=args.min_count, epochs=args.word2vec_epochs,
                                            seed=config.pipeline.seed)
        written = embeddings.save_vectors(vectors, out)
    console.event(
        "result",
        f"embeddings: {len(vectors.index_to_key)} words x {vectors.vector_size} dimensions from "
        f"{len(sentences)} train texts of run {args.from_run} -> {out} ({written}); "
        f"use it with --pretrained-embeddings {out}",
        path=str(out),
        words=len(vectors.index_to_key),
    )
    return EXIT_OK


def cmd_gc(args, config) -> int:
    from pipeline.gc import collect_garbage
    from pipeline.root import root_lock
    keep = args.keep if args.keep is not None else config.retention.runs
    if args.keep is None and keep == 0:
        raise UsageError("give --keep N (the newest runs to keep) or set retention.runs in the configuration")
    if keep < 1:
        raise UsageError(f"--keep must be at least 1 (got {keep}): the newest run is always kept")
    check_root(config.pipeline_root())
    with root_lock(config.pipeline_root()):
        removed = collect_garbage(
            config.pipeline_root(),
            keep,
            dry_run=args.dry_run,
            serving_dir=config.serving_dir(),
            served_versions=config.retention.served_versions,
        )
    verb = "would delete" if args.dry_run else "deleted"
    for path in removed:
        print(f"{verb} {path}")
    print(f"{verb} {len(removed)} folders and files")
    return EXIT_OK


def cmd_rollback(args, config) -> int:
    from pipeline.rollback import rollback
    from pipeline.root import root_lock
    if args.version < 1:
        raise UsageError(f"VERSION must be a served version number (1, 2, ...), got {args.version}")
    check_root(config.pipeline_root())
    with root_lock(config.pipeline_root()):
        rollback(config.pipeline_root(), config, args.version)
    return EXIT_OK
