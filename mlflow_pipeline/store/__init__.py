"""The tracking store: URIs and experiments, run artifacts, lineage."""
