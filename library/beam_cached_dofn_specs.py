"""Beam's state and timer specs of a DoFn, found once per DoFn class.

Beam asks whether a DoFn uses state or timers (`userstate.get_dofn_specs`) several times for every DoFn it
applies, translates and runs, and each answer reads the signature of every method of the DoFn again with
`inspect.signature`: about 6,700 answers and 200,000 signatures per retrain of the committed sample, a fifth
of its time (benchmarks/results/beam_dofn_specs.md). The answer comes from the defaults of the methods'
parameters (`DoFn.StateParam(...)`, `DoFn.TimerParam(...)`), which belong to the class, so it is kept per
class. A DoFn holding a bound method of its own (Beam's Map and FlatMap keep the mapped function as `process`)
is answered by Beam every time, as before.

Tied to Beam 2.77's `apache_beam.transforms.userstate.get_dofn_specs`, which Beam's modules call through the
module (`userstate.get_dofn_specs`, and `is_stateful_dofn` and `validate_stateful_dofn` beside it): Beam is
pinned (pyproject.toml). Installed by library/beam_options.pipeline_options, so every Beam step of this
process has it; worker processes Beam starts answer as Beam does."""
from __future__ import annotations

import types
import weakref

from apache_beam.transforms import userstate

_BEAMS_OWN = userstate.get_dofn_specs
# a class defined in a function (Beam makes some per transform) leaves with its last DoFn
_BY_CLASS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def get_dofn_specs(dofn) -> tuple[set, set]:
    """Beam's answer for `dofn` (state specs, timer specs), computed once per class. New sets each call, as
    Beam returns."""
    attributes = getattr(dofn, "__dict__", None)
    if attributes is None or any(isinstance(v, types.MethodType) for v in attributes.values()):
        return _BEAMS_OWN(dofn)
    specs = _BY_CLASS.get(type(dofn))
    if specs is None:
        state, timers = _BEAMS_OWN(dofn)  # raises for a malformed DoFn, every time it is asked
        specs = _BY_CLASS[type(dofn)] = (frozenset(state), frozenset(timers))
    return set(specs[0]), set(specs[1])


def install() -> None:
    """From now on this process's Beam finds a DoFn class's specs once. Idempotent."""
    userstate.get_dofn_specs = get_dofn_specs
