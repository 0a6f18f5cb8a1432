"""A thin adapter over Beam's DaskRunner (apache_beam.runners.dask, Beam 2.77) that closes its gaps, so a
pipeline with several outputs and sinks runs on a dask.distributed cluster. Dask stays the engine: every Beam
transform becomes dask bag operations, scheduled by dask.distributed.

What Beam's DaskRunner lacks, and what this package's DaskClusterRunner (engines.dask.runner) does instead
(each is covered by tests/system/test_beam_engines.py, on plain Beam transforms):
  1. One bag per transform: every tagged output of a multi-output ParDo (`with_outputs`, `Partition`) lands in
     the same bag, so each consumer receives the mixture. Here bags are kept per PCollection: a ParDo emits
     (tag, value) pairs and each output PCollection is the bag filtered to its tag.
  2. Only the last visited bag is computed, so in a pipeline with several sinks the other branches silently
     never run. Here every leaf PCollection (one no transform consumes) is computed, reduced to its count so
     nothing but a number travels back to the client.
  3. Elements a DoFn emits in finish_bundle are dropped (results are read before finish_bundle runs), and the
     receiver list is shared by every bundle run from the same deserialized task. Here each bundle gets fresh
     receivers, read after finish_bundle. Beam's file sinks (WriteToText, ...) emit their results there.
  4. `Read` (and `Impulse`) become no-ops, so ReadFromText / ReadFromTFRecord produce nothing. Here `Read`
     splits its bounded source on the client and reads one split per partition; `Impulse` is a one-element
     bag.
  5. Side inputs are recomputed inside every task that uses them (with dask's default scheduler for bags, not
     the cluster). Here a side input is a dask Item computed once on the cluster and broadcast to the tasks.
  6. `Reshuffle` is an identity, and `Create` puts up to 128 elements into one partition, so a pipeline that
     starts from a short list (e.g. a list of file chunks) runs on one worker. Here `Reshuffle` splits its
     input into at least `--dask_reshuffle_partitions` partitions.
  7. The client (and the LocalCluster it may start) is never closed. Here the result closes both when the
     pipeline finishes or fails; without --dask_client_address a LocalCluster of --dask_workers processes is
     started for the pipeline.
What makes it hold at size (tests/system/test_dask_scale.py):
  8. No combiner lifting: CombinePerKey runs as a GroupByKey of every element (a vocabulary's every token
     occurrence). Here, as in Beam's DirectRunner, each partition pre-combines per key before the shuffle
     (LiftedCombinePerKey); the result lists each GroupByKey's input size (`shuffles`, also logged).
  9. Per-element wrappers: in the global window, GroupByKey shuffles the (key, value) pairs themselves (no
     WindowedValue, no GroupAlsoByWindow step), and a ParDo with one output returns bare values, not (tag,
     value). The WindowedValue a DoFn needs is built around one shared GlobalWindow.
 11. Every ParDo materialized its whole output as a list before the next ParDo read it (and moved it to
     another worker when dask placed the next task there). Here, as in Beam's own runners (fusion), a chain of
     ParDos each the only reader of the one before runs in one task per partition, each output passed on at
     once: a tokenizer's list of every token occurrence of a partition, for instance, never exists.
 10. A stuck computation waits forever. Here a watchdog fails the pipeline with one line when no task starts
     or finishes for --dask_stall_seconds, or every worker stays paused (memory), after writing the cluster's
     state to --dask_log_dir. The LocalCluster gets longer comm timeouts and --dask_worker_memory as its
     limit.
A ParDo's dask tasks are named after its Beam label (the dashboard, task stream and state dump show which step
runs). Only the global window is supported, as in Beam's DaskRunner (timestamps and windows are not carried).

Modules: runner.py (the runner, its result, the cluster start-up), translation.py (each transform as dask
bags), fusion.py (chains of ParDos as one task per partition), watchdog.py (when a computation is stuck).
"""
