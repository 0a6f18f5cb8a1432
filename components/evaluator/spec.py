"""The evaluator's spec: it reads no outside data, and its inputs, including the baseline model a Resolver
finds, are named in contract/names.py. Its executor scores the candidate (and the baseline) with TFMA and
blesses it.
"""
from contract.component_spec import ComponentSpec
from contract.names import BLESSING, EVALUATION

# Its decision: the served versions' recorded per-row results it is judged against (the anchor), which are
# no input of its lineage (dag.ServedResolver), so they enter its cache key this way.
SPEC = ComponentSpec(__name__, executor="components.evaluator.executor", outputs=(EVALUATION, BLESSING),
                     config_section="evaluator", decision="anchor_facts")
