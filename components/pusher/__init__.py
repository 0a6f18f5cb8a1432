"""Pusher: publishes a blessed model's serving SavedModel to the serving folder in TF Serving's layout."""
