#!/usr/bin/env bash
# The service's GPU path, measured on a GPU machine with the shipped models:
#
#   scripts/gpu_service.sh OUT_DIR
#
# 1. Redis on 127.0.0.1:6379 (started here when nothing answers; redis-server on PATH);
# 2. bench/queue.py with the worker on the GPU: queue overhead of a TTS job, and 200 ASR jobs
#    with dynamic batching against batch size 1 (the worker at its default precision);
# 3. bench/precision.py: the models in float32 against bf16 autocast on the GPU.
#
# Each writes its JSON report to OUT_DIR; a failure is logged and the next step still runs.
# SKIP_QUEUE=1 or SKIP_PRECISION=1 leaves one out.
set -uo pipefail

out_dir=${1:?usage: scripts/gpu_service.sh OUT_DIR}
PYTHON=${PYTHON:-python3}
DEVICE=${DEVICE:-cuda:0}
QUEUE_ARGS=${QUEUE_ARGS:-}  # e.g. "--asr-jobs 20 --overhead-jobs 5" for a CPU rehearsal
PRECISION_LISTS=${PRECISION_LISTS:-1-2}
mkdir -p "$out_dir"
started=$(date +%s)
log() { echo "[service $(($(date +%s) - started)) s] $*"; }

ping_redis() { redis-cli -h 127.0.0.1 -p 6379 ping 2>/dev/null | grep -q PONG; }
if ! ping_redis; then
    redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save '' --appendonly no \
        --logfile "$out_dir/redis.log"
    for _ in $(seq 50); do ping_redis && break; sleep 0.1; done
fi
ping_redis || { log "no Redis on 127.0.0.1:6379"; exit 1; }

if [ -z "${SKIP_QUEUE:-}" ]; then
    log "queue benchmark on $DEVICE"
    timeout 180 "$PYTHON" bench/queue.py --json --device "$DEVICE" --checkpoints checkpoints \
        --recognizer pipeline.inference.recognizer:Recognizer $QUEUE_ARGS > "$out_dir/queue.json" 2> "$out_dir/queue.err" \
        || { log "queue benchmark failed"; tail -20 "$out_dir/queue.err"; }
    tail -1 "$out_dir/queue.json"
fi

if [ -z "${SKIP_PRECISION:-}" ]; then
    log "precision benchmark on $DEVICE"
    timeout 90 "$PYTHON" bench/precision.py --json --device "$DEVICE" --lists "$PRECISION_LISTS" \
        > "$out_dir/precision.json" 2> "$out_dir/precision.err" \
        || { log "precision benchmark failed"; tail -20 "$out_dir/precision.err"; }
    tail -1 "$out_dir/precision.json"
fi
log "done"
