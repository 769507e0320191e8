#!/usr/bin/env bash
# One lent-GPU session (device tool): train the heavy SR x4 and then distill its EBM-SR, train the
# shipped LPRN and the deblur ablation (9 models on one shared batch stream) at the same time, then
# time everything on the GPU. Every run has a wall-clock budget (train.time_budget), so the session
# ends on time; results are packed into $OUT/results.tar every 30 s, so a cut-off run still returns.
# Prepare here first: `python tools/gpu_pack.py pack` (data into the git-ignored .gpu/), then
# device run: `bash tools/gpu_session.sh` with carry [".gpu"]. Local dry run: DEV=cpu SCALE_T=0.05 bash tools/gpu_session.sh
set -u
OUT=${OUT:-/tmp/gpu_out}
DEV=${DEV:-cuda}
SCALE_T=${SCALE_T:-1}          # multiplies every time budget (dry runs)
JOBS=${JOBS:-sr,lprn,ablation} # which trainings run (comma-separated; distill = EBM-SR x4 alone); timings run on CUDA unless SKIP_TIMINGS=1
LPRN_T=${LPRN_T:-390}          # LPRN budget in seconds (before SCALE_T); LPRN_SET / LPRNB_SET: extra --set options
LPRN_WORKERS=${LPRN_WORKERS:-5}
# Heavy x4 + EBM-SR: SR_SECONDS / DISTILL_SECONDS budgets, SR_INIT (empty = from scratch), SR_SET / DI_SET
# extra --set options (last, so they override). A clean split for defocus-sr's DIV2K renders (the heavy
# model and its student never see sr/train/DIV2K6):
#   JOBS=sr SR_INIT= SR_SECONDS=420 SR_SET='--set optim.lr=4e-4 --set data.roots=["sr/train/T91","sr/train/BSD200"]'
#   DI_SET='--set data.roots=["sr/train/T91","sr/train/BSD200"]' bash tools/gpu_session.sh
# DISTILL_SECONDS=0 with JOBS=sr: the heavy model alone, e.g. a third stage from the shipped one:
#   JOBS=sr DISTILL_SECONDS=0 SR_SECONDS=330 SR_SET='--set optim.lr=5e-5 --set data.batch=64 --set data.num_workers=12'
# (session 26 on an H200: Set5 x4 31.295 -> 31.297 dB in L1; with --set loss.kind=l2 it fell to 31.166 dB in 390 s)
# JOBS=distill: EBM-SR x4 alone from the shipped student (DISTILL_SECONDS, DI_LR, DI_SET). Afterwards, here:
# `python -m blurwise.train.router debias --train BANK` (the GPU students came out ~0.4% too dark, which costs
# most on the defocused patches routing gives them), then judge the student by the router's calibration (`bank`,
# `fit`), not by its whole-image PSNR: docs/results/ebmsr_x4_gpu_candidates.md.
# JOBS=lighttune: the route-aware fine-tune of EBM-SR x4 (blurwise.train.light_tune) at GPU size: the router's
# training bank built there (BANK_S seconds at most; a cut-off bank is used as far as it got), then LT_MIN minutes
# of LT_BATCH crops of LT_CROP LR px per step (cut by LT_WORKERS processes) from LT_INIT (empty = the shipped student). Afterwards, here: put the returned
# ebmsr-x4-lt.safetensors in place of the shipped one, `router bank` both splits, `fit`, and the benchmarks.
SR_INIT=${SR_INIT-edsr-s-x4}
PY=${PY:-python3}
SR_T=$(awk "BEGIN{print ${SR_SECONDS:-280}*$SCALE_T}"); DI_T=$(awk "BEGIN{print ${DISTILL_SECONDS:-115}*$SCALE_T}")
LP_T=$(awk "BEGIN{print $LPRN_T*$SCALE_T}"); AB_T=$(awk "BEGIN{print 380*$SCALE_T}")
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1 BLURWISE_DATA=${BLURWISE_DATA_GPU:-/tmp/bw_data} BLURWISE_RUNS=${BLURWISE_RUNS_GPU:-/tmp/bw_runs}
mkdir -p "$OUT" "$BLURWISE_RUNS"
LOG=$OUT/session.log
t0=$(date +%s); say() { echo "[$(( $(date +%s) - t0 ))s] $*" | tee -a "$LOG"; }
pack() {
  tar cf "$OUT/.r.tar" --ignore-failed-read blurwise/models/weights docs/results/training docs/results/gpu.md \
    "$BLURWISE_RUNS"/*/log.csv "$BLURWISE_RUNS"/*/*.safetensors "$OUT"/*.log 2>/dev/null
  mv "$OUT/.r.tar" "$OUT/results.tar"
  tar cf "$OUT/.c.tar" --ignore-failed-read "$BLURWISE_RUNS"/sr_edsr-s_x4/last.pt "$BLURWISE_RUNS"/deblur_lprn/last.pt "$BLURWISE_RUNS"/deblur_lprn_b/last.pt 2>/dev/null
  mv "$OUT/.c.tar" "$OUT/ckpt.tar"
}
say "start on $(hostname); $($PY -c 'import torch;print(torch.__version__, torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no cuda")')"
$PY tools/gpu_pack.py unpack .gpu/data "$BLURWISE_DATA" >>"$LOG" 2>&1 || { say "unpack failed"; exit 1; }
say "data ready"
( while true; do sleep 30; pack; done ) & PACKER=$!

T="$PY -m blurwise.train --ship"  # --ship: the exports replace blurwise/models/weights/*, the curves go to docs/
LONG="--set optim.iterations=1000000 --set data.length=200000 --set train.log_every=100"
has() { case ",$JOBS," in *",$1,"*) return 0 ;; esac; return 1; }
PIDS=()  # the training jobs (wait must not wait on the packer loop)
HEAVY_ONLY=$(awk "BEGIN{print ($DI_T <= 0)}")  # DISTILL_SECONDS=0: the heavy model alone (no prerender, no distill)
if has sr && [ "$HEAVY_ONLY" = 0 ]; then ( $PY tools/gpu_pack.py prerender blurwise/configs/distill_ebmsr_x4.toml --workers 4 > "$OUT/prerender.log" 2>&1
  say "prerender done" ) & PIDS+=($!); fi
if has sr; then
  ( $T blurwise/configs/sr_edsr-s_x4.toml --device $DEV --no-resume $LONG --set model.init_from=$SR_INIT \
    --set train.time_budget=$SR_T --set optim.lr=2e-4 --set optim.warmup=100 --set data.batch=32 --set data.patch=192 \
    --set data.num_workers=4 --set val.every=1000 --set train.checkpoint_every=1000 ${SR_SET:-} > "$OUT/sr.log" 2>&1
  say "sr done: $(tail -1 "$OUT/sr.log")"
  [ "$HEAVY_ONLY" = 1 ] && exit 0
  $T blurwise/configs/distill_ebmsr_x4.toml --device $DEV --no-resume $LONG --set model.init_from=ebmsr-x4 \
    --set train.time_budget=$DI_T --set optim.lr=1e-3 --set data.batch=32 --set data.num_workers=4 \
    --set val.every=1000 --set train.checkpoint_every=1000 ${DI_SET:-} > "$OUT/distill.log" 2>&1
  say "distill done: $(tail -1 "$OUT/distill.log")" ) & PIDS+=($!)
# distill alone (the shipped heavy kept): render the cache first, then a longer run from the shipped student.
elif has distill; then ( $PY tools/gpu_pack.py prerender blurwise/configs/distill_ebmsr_x4.toml --workers 14 > "$OUT/prerender.log" 2>&1
  say "prerender done"
  $T blurwise/configs/distill_ebmsr_x4.toml --device $DEV --no-resume $LONG --set model.init_from=ebmsr-x4 \
    --set train.time_budget=$DI_T --set optim.lr=${DI_LR:-5e-4} --set optim.warmup=200 --set data.batch=64 \
    --set data.num_workers=6 --set val.every=1000 --set train.checkpoint_every=1000 ${DI_SET:-} > "$OUT/distill.log" 2>&1
  say "distill done: $(tail -1 "$OUT/distill.log")" ) & PIDS+=($!)
elif has lighttune; then ( BANK=$BLURWISE_RUNS/bank_train; mkdir -p "$BLURWISE_RUNS/lighttune"
  timeout "$(awk "BEGIN{print int(${BANK_S:-200}*$SCALE_T)+1}")" $PY -m blurwise.train.router bank --split train \
    --out "$BANK" --threads "${BANK_THREADS:-16}" ${BANK_LIMIT:+--limit $BANK_LIMIT} > "$OUT/bank.log" 2>&1
  say "bank: $(ls "$BANK" | grep -v '.tmp.npz' | grep -c 'npz$') items"
  $PY -m blurwise.train.light_tune --train "$BANK" --device $DEV --steps 1000000 \
    --minutes "$(awk "BEGIN{print ${LT_MIN:-5}*$SCALE_T}")" --batch "${LT_BATCH:-256}" --crop "${LT_CROP:-40}" \
    --lr "${LT_LR:-3e-4}" --workers "${LT_WORKERS:-12}" ${LT_INIT:+--init $LT_INIT} --out "$BLURWISE_RUNS/lighttune/ebmsr-x4-lt.safetensors" \
    > "$OUT/lighttune.log" 2>&1
  say "lighttune done: $(tail -2 "$OUT/lighttune.log" | tr '\n' ' ')" ) & PIDS+=($!); fi
# One LPRN run: lprn_run JOB EXTRA... (the shipped recipe; EXTRA --set options last, so they override).
lprn_run() { local job=$1; shift
  ( $T blurwise/configs/deblur_lprn.toml --device $DEV --no-resume $LONG --set model.init_from=lprn \
    --set train.time_budget=$LP_T --set data.batch=16 --set data.patch=192 --set optim.warmup=200 \
    --set data.num_workers=$LPRN_WORKERS --set val.every=1000 --set train.checkpoint_every=1000 "$@" \
    > "$OUT/$job.log" 2>&1
  say "$job done: $(tail -1 "$OUT/$job.log")" ) & PIDS+=($!)
}
if has lprn; then lprn_run lprn ${LPRN_SET:-}; fi
# lprnb: a second LPRN run beside the first (another recipe: LPRNB_SET), exported into its run folder so the
# better one by held-out validation can be shipped afterwards.
if has lprnb; then lprn_run lprnb --set name=deblur_lprn_b \
  --set output.export="$BLURWISE_RUNS/deblur_lprn_b/lprn_b.safetensors" ${LPRNB_SET:-}; fi
if has ablation; then ( $T blurwise/configs/deblur_abl_*.toml --device $DEV --no-resume $LONG \
    --set train.time_budget=$AB_T --set data.batch=8 --set data.patch=128 --set optim.warmup=200 \
    --set data.num_workers=5 --set val.every=1000 --set train.checkpoint_every=1000 > "$OUT/ablation.log" 2>&1
  say "ablation done: $(tail -9 "$OUT/ablation.log" | tr '\n' ' ')" ) & PIDS+=($!); fi
if [ ${#PIDS[@]} -gt 0 ]; then wait "${PIDS[@]}"; fi
say "training done"; pack
if [ "$DEV" = cuda ] && [ -z "${SKIP_TIMINGS:-}" ]; then
  timeout 90 $PY benchmarks/gpu_timings.py --repeats 20 > "$OUT/timings.log" 2>&1; say "timings rc $?"
fi
kill $PACKER 2>/dev/null; pack
say "end"; tail -n 40 "$OUT/timings.log" 2>/dev/null; grep -h "steps" "$OUT"/*.log | tail -n 14
