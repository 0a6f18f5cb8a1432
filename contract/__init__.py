"""The contract between the layers: artifacts, component errors, JSON/file helpers and the configuration
schemas. It imports nothing else of the project and no TensorFlow or Beam at module level."""
