"""The model registry: versions and aliases, the audit trail of alias moves, promotion."""
