"""Beam engine adapters: runtime choices for where the Beam steps run. No step imports them (a step's outputs
are byte-identical across engines), so editing one changes no step's code version."""
