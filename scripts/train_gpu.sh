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
#    and a sentence synthesised and transcribed on the device by the new models; a recogniser
#    continued from ASR_INIT also as asr-averaged.pt, the average of ASR_INIT and the run's
#    last four snapshots, and as asr-snapshots.pt, the average of those snapshots alone (the
#    dev lists choose between them and the run's best).
#
# Python comes from $PYTHON (default python3) and runs `python -m pipeline`, so the service's
# packages (Celery, Redis, FastAPI) are not needed on the training machine.
#
# RUNS picks the runs (default "asr nat ar"; "lm" adds the recogniser's language model, trained
# on the text alone with the units of ASR_INIT or the shipped recogniser). A run can continue a
# shipped model instead of starting fresh: ASR_INIT=checkpoints/asr.pt fine-tunes the
# recogniser. AR_RUNS lists the autoregressive runs as ATTENTION[=INIT] words (default "dot"):
# "monotonic=checkpoints/tts-ar-monotonic.pt location=checkpoints/tts-ar-dot.pt" continues the
# monotonic model and warm-starts a location-aware one from the dot model, side by side. *_LR and *_WARMUP set the schedules;
# VOICES the corpus voices (the recogniser's; the TTS runs take flite slt).
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
RUNS=${RUNS:-asr nat ar}
CORPUS_WORKERS=${CORPUS_WORKERS:-$(nproc)}
AR_RUNS=${AR_RUNS:-dot}
ASR_LR=${ASR_LR:-1.5e-3} ASR_WARMUP=${ASR_WARMUP:-600}
ASR_CHANNEL_DB=${ASR_CHANNEL_DB:-6}  # random equaliser in ASR training (docs/recipes.md)
ASR_NOISE_SNR=${ASR_NOISE_SNR-10,50}  # noise in ASR utterances at an SNR in this range (empty: none)
ASR_NOISE_SHARE=${ASR_NOISE_SHARE:-0.5}  # the share of ASR utterances that get it
ASR_SILENCE=${ASR_SILENCE:-0.5}  # each end's silence redrawn from 0 to this many seconds
ASR_VTLP=${ASR_VTLP:-0}  # vocal tract length perturbation, factors within 1 +- this (0: off)
# the right-to-left decoder's share of the attention loss (U2++ uses 0.3; it rescores the
# beam's hypotheses, and a model without one gets a copy of its left-to-right decoder). 0: none;
# one trained alone on the frozen shipped model on a CPU did not help (docs/BENCHMARKS.md)
ASR_REVERSE_WEIGHT=${ASR_REVERSE_WEIGHT:-0}
ASR_SAVE_EVERY=${ASR_SAVE_EVERY:-250}  # each save's weights are kept, for the average below
# short utterances (a word alone, a number, a digit string: `text-corpus --short`) spoken by
# VOICES beside the sentences, for the recogniser only (0: none)
ASR_SHORT_LINES=${ASR_SHORT_LINES:-0}
# more `train asr` flags, e.g. waveform augmentation with processes that make its batches:
# ASR_ARGS="--trim-augment 0.5 --pitch-augment 3 --telephone-augment 0.35 --loader-workers 12"
ASR_ARGS=${ASR_ARGS:-}
AR_LR=${AR_LR:-1e-3} AR_WARMUP=${AR_WARMUP:-1000}
asr_init=(${ASR_INIT:+--init-from "$ASR_INIT"})
# before it trains, the ASR run computes the features of the corpus (~90 s for 37k utterances on
# an H200 machine's 16 cores); ASR_MARGIN leaves that time and the final evaluation and export
ASR_MARGIN=${ASR_MARGIN:-150}
wants() { [[ " $RUNS " == *" $1 "* ]]; }
started=$(date +%s)
mkdir -p "$out_dir" runs
log() { echo "[$(($(date +%s) - started)) s] $*"; }
speechq() { "$PYTHON" -m pipeline "$@"; }
seconds_left() { echo $((budget - ($(date +%s) - started))); }
# one AR_RUNS word, ATTENTION[=INIT] -> "ATTENTION INIT" (INIT empty when none is given)
ar_run() { local init=${1#*=}; [ "$init" != "$1" ] || init=""; echo "${1%%=*} $init"; }
# --max-minutes for a run that must end $1 seconds before the budget does
minutes() { "$PYTHON" -c "print(round(max(0.5, ($(seconds_left) - $1) / 60), 2))"; }

voices=${VOICES:-slt,awb,rms,kal16,en-us,en-gb+f2,en-us+m3,en-gb-x-rp+f3,en-gb-scotland+m1,en-us+f4}
text=data/text/train.txt
[ -s "$text" ] || speechq text-corpus --out "$text"

# ---------------------------------------------------------------- smoke: every recipe on the device
log "smoke corpus"
speechq corpus --text "$text" --voices slt --limit 200 --out data/smoke --workers "$CORPUS_WORKERS" >/dev/null
speechq corpus --text "$text" --voices "$voices" --spread --limit 300 --out data/smoke \
    --workers "$CORPUS_WORKERS" >/dev/null
smoke=(--max-steps 3 --eval-every 2 --save-every 2 --device "$DEVICE" --threads "$THREADS" --no-resume)
log "smoke runs"
asr_smoke="" nat_smoke=""
if wants asr; then
    speechq train asr --manifest data/smoke/manifest.jsonl --text "$text" --out runs/smoke-asr \
        $ASR_ARGS \
        "${smoke[@]}" "${asr_init[@]}" --batch-frames 8000 > runs/smoke-asr.log 2>&1 &
    asr_smoke=$!
fi
# the NAT smoke run also writes the TTS feature cache that the AR smoke run reads
speechq train tts-nat --manifest data/smoke/manifest.jsonl --out runs/smoke-nat \
    "${smoke[@]}" --batch-frames 4000 > runs/smoke-nat.log 2>&1 &
nat_smoke=$!
# the corpus is spoken while the smoke runs, so a failure costs little
speechq corpus --text "$text" --voices slt --limit "$SLT_LINES" --out data/corpus \
    --workers "$CORPUS_WORKERS" > runs/corpus.log 2>&1 &
corpus=$!
ok=1
[ -z "$asr_smoke" ] || wait $asr_smoke || { ok=0; log "smoke ASR failed"; tail -30 runs/smoke-asr.log; }
wait $nat_smoke || { ok=0; log "smoke NAT failed"; tail -30 runs/smoke-nat.log; }
if wants ar; then
    for run in $AR_RUNS; do
        read -r attention init <<< "$(ar_run "$run")"
        speechq train tts --manifest data/smoke/manifest.jsonl --out "runs/smoke-ar-$attention" \
            --attention "$attention" ${init:+--init-from "$init"} "${smoke[@]}" --batch-frames 4000 \
            > "runs/smoke-ar-$attention.log" 2>&1 \
            || { ok=0; log "smoke AR $attention failed"; tail -30 "runs/smoke-ar-$attention.log"; }
    done
fi
if [ $ok = 0 ]; then
    kill $corpus 2>/dev/null || true
    exit 3
fi
log "smoke runs passed"
pids=()
if wants lm; then  # text only: it trains while the corpus is spoken
    speechq train lm --text "$text" ${ASR_INIT:+--asr "$ASR_INIT"} --out runs/lm \
        --device "$DEVICE" --threads 2 --max-steps 1000000 --max-minutes "$(minutes 60)" \
        --batch-tokens 8000 --lr 2e-3 --warmup 300 --eval-every 250 --save-every 1000 \
        > runs/lm.log 2>&1 &
    pids+=(lm:$!)
fi

# ---------------------------------------------------------------- corpus
wait $corpus
asr_manifests=(--manifest data/corpus/manifest.jsonl)
if wants asr; then  # the other voices are for the recogniser only
    speechq corpus --text "$text" --voices "$voices" --spread --limit "$SPREAD_LINES" \
        --out data/corpus --workers "$CORPUS_WORKERS" >> runs/corpus.log 2>&1
    if [ "$ASR_SHORT_LINES" -gt 0 ]; then
        speechq text-corpus --short "$ASR_SHORT_LINES" --out data/text/short.txt >> runs/corpus.log
        speechq corpus --text data/text/short.txt --voices "$voices" --spread \
            --limit "$ASR_SHORT_LINES" --prosody 0.3 --out data/corpus-short \
            --workers "$CORPUS_WORKERS" >> runs/corpus.log 2>&1
        asr_manifests+=(--manifest data/corpus-short/manifest.jsonl)
    fi
fi
log "corpus: $(cat data/corpus*/manifest.jsonl | wc -l) utterances"

# ---------------------------------------------------------------- training, side by side
# each run gets the time left less a margin: --max-minutes counts from the first step, and
# before it a run computes its features (ASR: ~90 s for the 37k utterances on an H200 machine's
# 16 cores), then ends with an evaluation and is exported
common=(--device "$DEVICE" --threads "$THREADS" --max-steps 1000000)
if wants asr; then
    speechq train asr "${asr_manifests[@]}" --text "$text" --out runs/asr $ASR_ARGS \
        "${common[@]}" "${asr_init[@]}" --max-minutes "$(minutes "$ASR_MARGIN")" --batch-frames "$ASR_BATCH" \
        --lr "$ASR_LR" --warmup "$ASR_WARMUP" --channel-augment "$ASR_CHANNEL_DB" \
        ${ASR_NOISE_SNR:+--noise-augment "$ASR_NOISE_SNR" --noise-share "$ASR_NOISE_SHARE"} \
        --silence-augment "$ASR_SILENCE" --reverse-weight "$ASR_REVERSE_WEIGHT" \
        --vtlp-augment "$ASR_VTLP" --eval-every 500 --save-every "$ASR_SAVE_EVERY" --keep-snapshots > runs/asr.log 2>&1 &
    pids+=(asr:$!)
fi
if wants nat; then
    speechq train tts-nat --manifest data/corpus/manifest.jsonl --out runs/tts-nat \
        "${common[@]}" --max-minutes "$(minutes 90)" --batch-frames "$TTS_BATCH" --lr 1.5e-3 \
        --warmup 400 --eval-every 500 --save-every 500 > runs/tts-nat.log 2>&1 &
    pids+=(tts-nat:$!)
fi
if wants ar; then
    # the TTS feature cache is written by whichever TTS run starts first; the second reads it
    if wants nat; then
        until ls data/corpus/features/manifest-*.pt >/dev/null 2>&1 \
                && [ "$(ls data/corpus/features/manifest-*.pt | wc -l)" -ge 2 ]; do
            sleep 2
            kill -0 "${pids[-1]#*:}" 2>/dev/null || break
        done
    fi
    for run in $AR_RUNS; do
        read -r attention init <<< "$(ar_run "$run")"
        speechq train tts --manifest data/corpus/manifest.jsonl --out "runs/tts-ar-$attention" \
            --attention "$attention" --reduction 2 ${init:+--init-from "$init"} "${common[@]}" \
            --max-minutes "$(minutes 80)" --batch-frames "$TTS_BATCH" --lr "$AR_LR" --warmup "$AR_WARMUP" \
            --eval-every 1000 --save-every 1000 > "runs/tts-ar-$attention.log" 2>&1 &
        pids+=("tts-ar-$attention:$!")
    done
fi
log "training: ${pids[*]}"
status=0
for run in "${pids[@]}"; do
    wait "${run#*:}" || { status=1; log "${run%:*} failed"; tail -20 "runs/${run%:*}.log"; }
done

# ---------------------------------------------------------------- export
ar_names=$(for run in $AR_RUNS; do echo "tts-ar-${run%%=*}"; done)
for name in asr tts-nat $ar_names lm; do
    if [ -f "runs/$name/best.pt" ]; then
        speechq export "runs/$name/best.pt" "$out_dir/$name.pt" | cut -c1-600 || status=1
    fi
done
# a continued recogniser also comes back as two averages, for the dev lists to choose from
# (docs/recipes.md): the model it started from (half the weight) with the run's last four
# snapshots (the other half), which won on the CPU in one session, and the snapshots alone,
# which won in the next
snapshots=($(ls runs/asr/snapshots/step-*.pt 2>/dev/null | tail -4))
if [ -n "${ASR_INIT:-}" ] && [ ${#snapshots[@]} -gt 0 ]; then
    shares=$(printf ',1%.0s' "${snapshots[@]}")
    speechq average "$out_dir/asr-averaged.pt" "$ASR_INIT" "${snapshots[@]}" \
        --weights "${#snapshots[@]}$shares" | cut -c1-300 || status=1
    speechq average "$out_dir/asr-snapshots.pt" "${snapshots[@]}" | cut -c1-300 || status=1
fi
# the inference paths on the device: synthesise a Harvard sentence, then transcribe it
tts_model=$(ls "$out_dir/tts-nat.pt" $(printf "$out_dir/%s.pt " $ar_names) 2>/dev/null | head -1 || true)
tts_decoder=$([[ $tts_model == *tts-nat.pt ]] && echo nat || echo ar)
asr_model=$(ls "$out_dir/asr.pt" 2>/dev/null || true)
if [ -n "$tts_model" ] && [ -n "$asr_model" ]; then
    speechq tts "The birch canoe slid on the smooth planks." --model "$tts_model" \
        --decoder "$tts_decoder" --device "$DEVICE" -o runs/check.wav > runs/check.log 2>&1 \
        && speechq asr runs/check.wav --model "$asr_model" --device "$DEVICE" --format jsonl \
        >> runs/check.log 2>&1 || log "inference check failed"
    tail -5 runs/check.log
fi
tar czf "$out_dir/logs.tar.gz" runs/*.log runs/*/train_log.jsonl \
    $(ls runs/tts-ar-*/attention/*.png 2>/dev/null | tail -4)
log "done"
exit $status
