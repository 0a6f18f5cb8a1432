"""The transform's spec: it reads no outside data and names no input of its own (its inputs, examples and
schema, are named in contract/names.py). Its executor builds the vocabulary with TFT and writes token ids.
"""
from contract.component_spec import ComponentSpec
from contract.names import TRANSFORM_GRAPH, TRANSFORMED_EXAMPLES

SPEC = ComponentSpec(__name__, executor="components.transform.executor",
                     outputs=(TRANSFORM_GRAPH, TRANSFORMED_EXAMPLES), config_section="transform")
