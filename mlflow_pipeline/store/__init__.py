"""The tracking store: URIs and experiments, run artifacts, lineage."""

# What opening a database store (SQLite, PostgreSQL, ...) imports: ~0.8 s, worth importing
# early (with a command's other imports, or in a sweep's warm workers). Kept here, free of
# imports, so that the CLI's fast path can name them without importing MLflow.
SQL_STORE_MODULES = (
    "mlflow.store.tracking.sqlalchemy_store",
    "mlflow.store.model_registry.sqlalchemy_store",
)
