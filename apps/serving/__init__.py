"""`agnews-pipeline serve`: the subset of TF Serving's REST API that clients of this model use, in Python
(https://www.tensorflow.org/tfx/serving/api_rest). http.py answers the requests and runs the server,
codec.py reads requests' JSON into arrays and writes answers, batching.py merges concurrent requests into
one model call, versions.py finds, loads and hot-reloads the SavedModel versions, metrics.py keeps the
Prometheus page."""
