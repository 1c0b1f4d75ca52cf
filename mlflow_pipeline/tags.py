"""Every MLflow tag and environment variable name mlflow-pipeline reads or writes, by namespace.

``mlflow.*`` tags are MLflow's own and drive its UI; ``pipeline.*`` are on the runs we create;
``lineage.*``, ``promotion.*`` and ``audit.*`` on registered model versions and audit runs.
"""

from __future__ import annotations


class MLflow:
    """MLflow's own tags, which its UI reads."""

    PARENT = "mlflow.parentRunId"
    GIT_COMMIT = "mlflow.source.git.commit"
    USER = "mlflow.user"
    RUN_NAME = "mlflow.runName"
    NOTE = "mlflow.note.content"
    # A dataset input's tag (not a run tag): the dataset's role in the run, the UI's "Context".
    DATASET_CONTEXT = "mlflow.data.context"


class Runs:
    """Tags on every run mlflow-pipeline creates (pipeline, stage, sweep, score runs)."""

    KIND = "pipeline.kind"  # "pipeline", "stage", "sweep" or "score"
    STAGE = "pipeline.stage"
    PIPELINE_RUN = "pipeline.run_id"
    RUNNER_MODE = "pipeline.runner_mode"
    GIT_COMMIT = "pipeline.git_commit"
    GIT_DIRTY = "pipeline.git_dirty"
    ERROR = "pipeline.error"
    STEPS = "pipeline.steps"
    OVERRIDES = "pipeline.overrides"  # the Hydra overrides the pipeline was composed with
    UPSTREAM_PREFIX = "pipeline.upstream."  # + dataset name -> run id it was read from
    MODEL_URI = "pipeline.model_uri"
    # + "input."/"output." + dataset name -> content digest
    DIGEST_PREFIX = "pipeline.digest."
    DIGEST_OUTPUT = "pipeline.digest.output."
    DIGEST_INPUT = "pipeline.digest.input."
    INPUT_PREFIX = "pipeline.input."  # + model dataset name + ".uri"
    WARNINGS_PREFIX = "pipeline.warnings."  # + dataset name -> rows with warnings
    # On the pipeline run: detected | none | not checked (the profile stage's drift result).
    DRIFT = "pipeline.drift"
    DRIFTED = "pipeline.drift.features"
    REPRODUCES = "pipeline.reproduces"  # on a reproduction's pipeline run
    # The process that owns a RUNNING run: lets a later pipeline mark it FAILED once that
    # process is gone (killed, crashed), instead of leaving it RUNNING forever.
    HOST = "pipeline.host"
    PID = "pipeline.pid"
    PID_STARTED = "pipeline.pid_started"


class Cache:
    """The cache's tags on stage runs (and its summary on the pipeline run)."""

    KEY = "pipeline.cache.key"
    STATUS = "pipeline.cache.status"  # hit | miss | recompute | off | uncacheable
    REASON = "pipeline.cache.reason"
    # On a hit run: the run whose outputs it reused (where its artifacts are).
    SOURCE = "pipeline.cache.source_run"
    # "true" once a computed run's outputs are complete and may be reused.
    STORED = "pipeline.cache.stored"
    # On a computed run whose stage changed what it reads from outside (register moving the
    # champion it compares with): its key with those contexts as the run left them. A later
    # run that finds them so reuses it too.
    KEY_AFTER = "pipeline.cache.key_after"
    # On the pipeline run: "ingest=hit validate=hit split=miss ..."
    SUMMARY = "pipeline.cache.summary"


class Sweep:
    """Tags of a Hydra multirun: the sweep run and the pipeline runs under it."""

    # A pipeline run's part in a sweep: "shared" (stages every job shares, run once first),
    # "job", or "register" (the best job's model, registered after all jobs).
    ROLE = "pipeline.sweep.role"
    BEST = "pipeline.sweep.best_run"
    BEST_OVERRIDES = "pipeline.sweep.best_overrides"
    OVERRIDES = "pipeline.sweep_overrides"
    LAUNCHER = "pipeline.sweep.launcher"
    SWEEPER = "pipeline.sweep.sweeper"
    # On the sweep run: the multirun's hydra.sweep.dir, by which its jobs find it.
    DIR = "pipeline.sweep.dir"


class Score:
    """Tags of a batch-scoring run (``mlflow run . -e score``)."""

    MODEL = "score.model"
    INPUT = "score.input"
    OUTPUT = "score.output"


class Lineage:
    """Model version tags: where a registered version came from."""

    PIPELINE_RUN = "lineage.pipeline_run"
    RUN_PREFIX = "lineage.run."  # + stage name -> the run that computed it
    DIGEST_PREFIX = "lineage.digest."  # + dataset name -> content digest
    GIT_COMMIT = "lineage.git_commit"
    GIT_DIRTY = "lineage.git_dirty"
    CONFIG_DIGEST = "lineage.config_digest"
    PACKAGES = "lineage.packages"
    ARTIFACT = "lineage.artifact"  # runs:/<register run>/lineage.json


class Promotion:
    """Model version tags: the register stage's decision."""

    DECISION = "promotion.decision"
    REASON = "promotion.reason"
    METRIC = "promotion.metric"
    CHALLENGER_SCORE = "promotion.challenger_score"
    CHAMPION_SCORE = "promotion.champion_score"
    CHAMPION_VERSION = "promotion.champion_version"
    PIPELINE_RUN = "pipeline.run_id"
    # The register stage run that made the decision (a rerun takes over a crashed one's).
    STAGE_RUN = "pipeline.register_run"
    # The challenger's gain over the champion and its confidence interval (paired bootstrap):
    # "gain [low, high] at 95% (1000 resamples)".
    GAIN_INTERVAL = "promotion.gain_interval"


class Registry:
    """The registry's own bookkeeping: content digests of versions, the promotion lock, and
    the plan of an alias move in progress (see registry/lock.py and registry/plan.py)."""

    # On a model version: "sha256:<hex>" of the model artifact's content (registry/digest.py);
    # a model with the digest of an existing version is not registered again.
    CONTENT_DIGEST = "registry.content_digest"
    # On the registered model while a promotion moves aliases: the moves it will make (JSON),
    # so that the next promotion finishes an interrupted one.
    PLAN = "registry.promotion_plan"
    # On the lock (a registered model "<model>.promotion-lock"), with Runs.HOST/PID/PID_STARTED.
    LOCK_TOKEN = "registry.lock.token"
    LOCK_HOLDER = "registry.lock.holder"
    LOCK_ACQUIRED = "registry.lock.acquired_ms"
    LOCK_HEARTBEAT = "registry.lock.heartbeat_ms"


class Audit:
    """Tags of an audit run (one per alias move), and of the registered model."""

    # On the registered model, written at the first recorded move: the audit experiment (name
    # and id) and the alias names the pipeline manages, for ``mlflow-pipeline audit/promote``.
    MODEL_EXPERIMENT = "audit.experiment"
    MODEL_EXPERIMENT_ID = "audit.experiment_id"
    MODEL_ALIASES = "audit.aliases"
    # On an audit run.
    MODEL = "audit.model"
    ALIAS = "audit.alias"
    FROM = "audit.from_version"
    TO = "audit.to_version"
    KIND = "audit.kind"
    ACTOR = "audit.actor"
    REASON = "audit.reason"
    HOST = "audit.host"
    PIPELINE_RUN = "audit.pipeline_run"
    STAGE_RUN = "audit.stage_run"
    METRIC = "audit.metric"
    SINCE = "audit.moved_after"
    # The alias-move plan (Registry.PLAN id) and the step of it an audit run records.
    PLAN = "audit.plan"
    STEP = "audit.step"
    # "true" on a record whose writer died half-way and that a later promotion finished.
    COMPLETED = "audit.completed_later"


class Env:
    """Environment variables read or set."""

    TRACKING_URI = "MLFLOW_TRACKING_URI"
    REGISTRY_URI = "MLFLOW_REGISTRY_URI"
    # "false" in the processes we start: no download progress bars in their output.
    ARTIFACTS_PROGRESS_BAR = "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"
    # `mlflow run` hands the run it made to the command it starts in these.
    RUN_ID = "MLFLOW_RUN_ID"
    EXPERIMENT_ID = "MLFLOW_EXPERIMENT_ID"
    # Kubernetes jobs: the tracking server as the cluster reaches it.
    KUBE_TRACKING_URI = "KUBE_MLFLOW_TRACKING_URI"
    # The webhook when alerts.webhook is null: a URL with a token stays out of the config.
    ALERT_WEBHOOK = "MLFLOW_PIPELINE_ALERT_WEBHOOK"
    # Prefix of the variables a command hook gets (MLFLOW_PIPELINE_ALERT_KIND, ..._STAGE, ...).
    ALERT_PREFIX = "MLFLOW_PIPELINE_ALERT_"
    # Testing aid: kill the process with SIGKILL inside a stage (see engine.stage), or at a
    # named point of a promotion ("promotion.<point>", see registry/failpoint.py).
    FAILPOINT = "MLFLOW_PIPELINE_FAILPOINT"
    # MLflow's HTTP client: retries, backoff and timeout (defaults set by store.tracking).
    HTTP_MAX_RETRIES = "MLFLOW_HTTP_REQUEST_MAX_RETRIES"
    HTTP_BACKOFF_FACTOR = "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR"
    HTTP_BACKOFF_JITTER = "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER"
    HTTP_TIMEOUT = "MLFLOW_HTTP_REQUEST_TIMEOUT"
    # Secrets handed to a stage's entry point (runner=projects) as ${oc.env:...}, never as
    # MLproject parameters (which MLflow logs): MLFLOW_PIPELINE_SECRET_0, _1, ...
    SECRET_PREFIX = "MLFLOW_PIPELINE_SECRET_"
    # A tracking server's basic-auth credentials (taken out of an http://user:pass@ URI).
    TRACKING_USERNAME = "MLFLOW_TRACKING_USERNAME"
    TRACKING_PASSWORD = "MLFLOW_TRACKING_PASSWORD"
