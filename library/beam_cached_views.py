"""Beam pipeline options whose views are made once per class.

Beam asks a pipeline's options for a view (`options.view_as(TypeOptions)`) at every transform it applies and
checks, and each view parses the flags again with a new argparse parser: about 5,000 views, over a second of
CPU, per retrain of the committed sample (a TFT pipeline applies about a thousand transforms). A view shares
its values with the options it came from (Beam's contract: `view_as` copies nothing), so handing out the same
view of a class each time is the same as making a new one. Imported only where Beam is (by
library/beam_options.pipeline_options)."""
from __future__ import annotations

from apache_beam.options.pipeline_options import PipelineOptions


class CachedViewsOptions(PipelineOptions):
    """PipelineOptions that keep one view per options class. Adds no flags of its own."""

    def view_as(self, cls):
        views = self.__dict__.setdefault("_views", {})
        view = views.get(cls)
        if view is None:
            view = views[cls] = super().view_as(cls)
        return view

    def __getstate__(self):
        # what pickles is Beam's state: the views are made again where the options land
        state = dict(super().__getstate__())
        state.pop("_views", None)
        return state
