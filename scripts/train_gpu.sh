#!/usr/bin/env bash
# Build the corpus and train the shipped models on one GPU machine, from this repository alone,
# within a fixed wall-clock budget:
#
#   scripts/train_gpu.sh OUT_DIR [BUDGET_SECONDS]
#
# 1. speak the corpus of docs/recipes.md with every core (flite and espeak-ng must be on PATH);
# 2. a smoke run of each recipe (a few steps and an evaluation on the GPU), which stops the
#    script at once if any recipe fails, before the budget is spent;
# 3. ASR, non-autoregressive TTS and autoregressive TTS side by side on the one GPU, each
#    stopped by --max-minutes so that all end inside the budget;
# 4. each run's best checkpoint exported (fp16, with its provenance) to OUT_DIR, with the logs,
#    and a sentence synthesised and transcribed on the device by the new models.
#
# Python comes from $PYTHON (default python3) and runs `python -m pipeline`, so the service's
# packages (Celery, Redis, FastAPI) are not needed on the training machine.
set -euo pipefail

out_dir=${1:?usage: scripts/train_gpu.sh OUT_DIR [BUDGET_SECONDS]}
budget=${2:-540}
PYTHON=${PYTHON:-python3}
DEVICE=${DEVICE:-cuda}
# corpus size; the smoke corpus and a CPU rehearsal of this script set these smaller
SLT_LINES=${SLT_LINES:-8000}
SPREAD_LINES=${SPREAD_LINES:-30000}
ASR_BATCH=${ASR_BATCH:-60000}
TTS_BATCH=${TTS_BATCH:-24000}
THREADS=${THREADS:-4}
started=$(date +%s)
mkdir -p "$out_dir" runs
log() { echo "[$(($(date +%s) - started)) s] $*"; }
speechq() { "$PYTHON" -m pipeline "$@"; }
seconds_left() { echo $((budget - ($(date +%s) - started))); }

voices=slt,awb,rms,kal16,en-us,en-gb+f2,en-us+m3,en-gb-x-rp+f3,en-gb-scotland+m1,en-us+f4
text=data/text/train.txt
[ -s "$text" ] || speechq text-corpus --out "$text"

# ---------------------------------------------------------------- smoke: every recipe on the device
log "smoke corpus"
speechq corpus --text "$text" --voices slt --limit 200 --out data/smoke --workers "$(nproc)" >/dev/null
speechq corpus --text "$text" --voices "$voices" --spread --limit 300 --out data/smoke \
    --workers "$(nproc)" >/dev/null
smoke=(--max-steps 3 --eval-every 2 --save-every 2 --device "$DEVICE" --threads "$THREADS" --no-resume)
log "smoke runs"
speechq train asr --manifest data/smoke/manifest.jsonl --text "$text" --out runs/smoke-asr \
    "${smoke[@]}" --batch-frames 8000 > runs/smoke-asr.log 2>&1 &
asr_smoke=$!
speechq train tts-nat --manifest data/smoke/manifest.jsonl --out runs/smoke-nat \
    "${smoke[@]}" --batch-frames 4000 > runs/smoke-nat.log 2>&1 &
nat_smoke=$!
# the corpus is spoken while the smoke runs, so a failure costs little
speechq corpus --text "$text" --voices slt --limit "$SLT_LINES" --out data/corpus \
    --workers "$(nproc)" > runs/corpus.log 2>&1 &
corpus=$!
ok=1
wait $asr_smoke || { ok=0; log "smoke ASR failed"; tail -30 runs/smoke-asr.log; }
wait $nat_smoke || { ok=0; log "smoke NAT failed"; tail -30 runs/smoke-nat.log; }
# the AR smoke reads the NAT smoke's feature cache, so it runs second
speechq train tts --manifest data/smoke/manifest.jsonl --out runs/smoke-ar \
    "${smoke[@]}" --batch-frames 4000 > runs/smoke-ar.log 2>&1 \
    || { ok=0; log "smoke AR failed"; tail -30 runs/smoke-ar.log; }
if [ $ok = 0 ]; then
    kill $corpus 2>/dev/null || true
    exit 3
fi
log "smoke runs passed"

# ---------------------------------------------------------------- corpus
wait $corpus
speechq corpus --text "$text" --voices "$voices" --spread --limit "$SPREAD_LINES" --out data/corpus \
    --workers "$(nproc)" >> runs/corpus.log 2>&1
log "corpus: $(wc -l < data/corpus/manifest.jsonl) utterances"

# ---------------------------------------------------------------- training, side by side
# each run gets the time left less a margin: --max-minutes counts from the first step, and
# before it a run computes its features (ASR: ~90 s for the 37k utterances on an H200 machine's
# 16 cores), then ends with an evaluation and is exported
minutes() { "$PYTHON" -c "print(round(max(0.5, ($(seconds_left) - $1) / 60), 2))"; }
common=(--device "$DEVICE" --threads "$THREADS" --max-steps 1000000)
speechq train asr --manifest data/corpus/manifest.jsonl --text "$text" --out runs/asr \
    "${common[@]}" --max-minutes "$(minutes 150)" --batch-frames "$ASR_BATCH" --lr 1.5e-3 \
    --warmup 600 --eval-every 500 --save-every 500 > runs/asr.log 2>&1 &
asr=$!
# NAT first: it writes the TTS feature cache that the AR run then reads
speechq train tts-nat --manifest data/corpus/manifest.jsonl --out runs/tts-nat \
    "${common[@]}" --max-minutes "$(minutes 90)" --batch-frames "$TTS_BATCH" --lr 1.5e-3 \
    --warmup 400 --eval-every 500 --save-every 500 > runs/tts-nat.log 2>&1 &
nat=$!
until ls data/corpus/features/manifest-*.pt >/dev/null 2>&1 && [ "$(ls data/corpus/features/manifest-*.pt | wc -l)" -ge 2 ]; do
    sleep 2
    kill -0 $nat 2>/dev/null || break
done
speechq train tts --manifest data/corpus/manifest.jsonl --out runs/tts-ar-dot --attention dot \
    --reduction 2 "${common[@]}" --max-minutes "$(minutes 80)" --batch-frames "$TTS_BATCH" \
    --lr 1e-3 --warmup 1000 --eval-every 1000 --save-every 1000 > runs/tts-ar-dot.log 2>&1 &
ar=$!
log "training: asr $asr, tts-nat $nat, tts-ar $ar"
status=0
for run in asr:$asr tts-nat:$nat tts-ar-dot:$ar; do
    wait "${run#*:}" || { status=1; log "${run%:*} failed"; tail -20 "runs/${run%:*}.log"; }
done

# ---------------------------------------------------------------- export
for name in asr tts-nat tts-ar-dot; do
    if [ -f "runs/$name/best.pt" ]; then
        speechq export "runs/$name/best.pt" "$out_dir/$name.pt" | cut -c1-600 || status=1
    fi
done
# the inference paths on the device: synthesise a Harvard sentence, then transcribe it
if [ -f "$out_dir/tts-nat.pt" ] && [ -f "$out_dir/asr.pt" ]; then
    speechq tts "The birch canoe slid on the smooth planks." --model "$out_dir/tts-nat.pt" \
        --device "$DEVICE" -o runs/check.wav > runs/check.log 2>&1 \
        && speechq asr runs/check.wav --model "$out_dir/asr.pt" --device "$DEVICE" --format jsonl \
        >> runs/check.log 2>&1 || log "inference check failed"
    tail -5 runs/check.log
fi
tar czf "$out_dir/logs.tar.gz" runs/*.log runs/*/train_log.jsonl \
    $(ls runs/tts-ar-dot/attention/*.png 2>/dev/null | tail -4)
log "done"
exit $status
