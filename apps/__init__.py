"""Applications on top of the pipeline: the command line (cli), the REST model server (serve) and batch
prediction (predict). Nothing in the layers below imports them."""
