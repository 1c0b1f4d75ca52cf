"""Runs a declared pipeline: the Stage spec and its run wrapper, the cache, runners, sweeps."""
