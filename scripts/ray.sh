#!/usr/bin/env bash
# A one-machine Ray cluster for sweeps (`mlflow-pipeline -m hydra/launcher=ray_cluster ...`),
# listening on 127.0.0.1 only.
#
#   scripts/ray.sh start [DIR]    # DIR (default /tmp/mlflow-pipeline-ray): Ray's sessions and logs
#   scripts/ray.sh status [DIR]
#   scripts/ray.sh stop [DIR]     # stops this cluster's processes only, not other Ray clusters
#
# After `start`, DIR/env holds RAY_ADDRESS (what hydra/launcher=ray_cluster joins) and
# RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 for `set -a; . DIR/env; set +a`. Without that variable in
# both `ray start` and the CLI, Ray replaces 127.0.0.1 by the machine's network address.
# Jobs run in the directory `start` ran in: start from the project root and Hydra's job folders
# land in its multirun/ next to the sweep's.
# Size: RAY_PORT (6379; the next five ports are used too), RAY_NUM_CPUS (2: two jobs at a time),
# RAY_OBJECT_STORE_MB (200).
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BIN="${VENV:-$REPO/.venv}/bin"
command="${1:-}"
# Unix socket paths under DIR must stay short (about 100 characters), hence /tmp.
DIR="$(realpath -m "${2:-/tmp/mlflow-pipeline-ray}")"
HOST=127.0.0.1
PORT="${RAY_PORT:-}"
# status and stop find the port of a running cluster in DIR/env.
if [[ -z "$PORT" && -f "$DIR/env" ]]; then
    PORT="$(sed -n 's/^RAY_ADDRESS=.*:\([0-9]*\)$/\1/p' "$DIR/env")"
fi
export RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0

usage() {
    sed -n '2,15p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
    exit 2
}

# The cluster's processes, by pid: those given DIR or the GCS address as a --flag by `ray start`,
# and their children. (`ray stop` would stop every Ray process of every cluster on the machine.)
cluster() {
    "$BIN/python" - "$1" "$DIR" "${PORT:+$HOST:$PORT}" <<'EOF'
import os, re, sys, psutil

action, folder, address = sys.argv[1:4]
mine = {os.getpid(), *(p.pid for p in psutil.Process().parents())}
in_folder = re.compile(re.escape(folder) + "(/|$)")


def ours(proc):
    flags = [a for a in proc.info["cmdline"] or [] if a.startswith("--")]
    return proc.pid not in mine and any(
        in_folder.search(a) or (address and a.endswith("=" + address)) for a in flags
    )


found = {}
for top in psutil.process_iter(["cmdline"]):
    try:
        if ours(top):
            found.update({p.pid: p for p in (top, *top.children(recursive=True))})
    except psutil.Error:
        continue
procs = [p for _, p in sorted(found.items())]
if action == "status":
    rss = 0
    for proc in procs:
        try:
            rss += proc.memory_info().rss
        except psutil.Error:
            pass
    print(f"{len(procs)} processes, {rss / 2**20:.0f} MB resident")
    sys.exit(0 if procs else 1)
for proc in procs:
    try:
        proc.terminate()
    except psutil.Error:
        pass
_, alive = psutil.wait_procs(procs, timeout=5)
for proc in alive:
    try:
        proc.kill()
    except psutil.Error:
        pass
psutil.wait_procs(alive, timeout=5)
print(f"stopped {len(procs)} Ray processes ({len(alive)} killed after 5 s)")
EOF
}

case "$command" in
start)
    PORT="${PORT:-6379}"
    mkdir -p "$DIR"
    if cluster status >/dev/null 2>&1; then
        echo "already running: $HOST:$PORT ($DIR/env)"
        exit 0
    fi
    # Ray's other fixed ports (client 10001, dashboard 8265 and 52365, metrics 44217 and 44227)
    # follow RAY_PORT: clusters with different RAY_PORTs do not collide.
    AUTOSCALER_METRIC_PORT=$((PORT + 4)) DASHBOARD_METRIC_PORT=$((PORT + 5)) \
        "$BIN/ray" start --head \
        --node-ip-address "$HOST" --port "$PORT" \
        --ray-client-server-port $((PORT + 1)) \
        --dashboard-port $((PORT + 2)) --dashboard-agent-listen-port $((PORT + 3)) \
        --include-dashboard=false --disable-usage-stats \
        --num-cpus "${RAY_NUM_CPUS:-2}" \
        --object-store-memory $((${RAY_OBJECT_STORE_MB:-200} * 1024 * 1024)) \
        --temp-dir "$DIR" >"$DIR/start.log" 2>&1 || {
        tail -20 "$DIR/start.log" >&2
        cluster stop >/dev/null || true
        exit 1
    }
    printf 'RAY_ADDRESS=%s\nRAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0\n' "$HOST:$PORT" >"$DIR/env"
    echo "Ray cluster at $HOST:$PORT (logs: $DIR/session_latest/logs)"
    echo "set -a; . $DIR/env; set +a"
    ;;
status)
    cluster status || { echo "not running ($DIR)"; exit 1; }
    "$BIN/ray" status --address "$HOST:${PORT:?no $DIR/env: set RAY_PORT}"
    ;;
stop)
    cluster stop
    rm -f "$DIR/env"
    ;;
*)
    usage
    ;;
esac
