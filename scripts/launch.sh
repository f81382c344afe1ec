#!/usr/bin/env bash
# Helpers sourced by the dataset scripts (msrvtt.sh, activitynet.sh, ...): checks of the environment variables
# that name data and weights, the split of a global batch over the processes, and the launch (python for one
# process, torchrun for several, multi-node through torchrun's rendezvous).
#
# Launch environment (all optional):
#   NPROC_PER_NODE   processes per node (default: the number of GPUs nvidia-smi lists, 1 without GPUs)
#   NNODES           nodes (default 1); with NNODES > 1 also NODE_RANK, MASTER_ADDR, MASTER_PORT (default 29500)
#   PER_GPU_BATCH    the most pairs one process encodes at once (default: the recipe's); the global batch is
#                    split as batch_size x processes, batch_size in micro-batches of at most PER_GPU_BATCH
#                    (--micro_batch_size: the exact loss of the global batch, one more forward per step)
#   ACCUMULATE=1     gradient accumulation instead (batch_size <= PER_GPU_BATCH x accumulation steps): no extra
#                    forward, but each contrastive loss sees only batch_size x processes pairs
#   OUTPUT_DIR       output folder (default outputs/<dataset>_<date-time>)
#   PRECISION        amp (default), bf16 or fp32;  NUM_WORKERS  DataLoader workers per process (default 8)
#   DRY_RUN=1        print the command instead of running it
# Under SLURM (scripts/slurm.sbatch: `srun bash scripts/msrvtt.sh`) every srun task is one process: the script runs
# main.py with python, which reads SLURM's environment (utils/engine/runtime/distributed.py), and the global batch is split
# over the step's tasks.

die() {
    echo "error: $*" >&2
    exit 2
}

# require_dir VAR "what it should hold": VAR must be set and name an existing folder.
require_dir() {
    local name=$1 what=$2
    [ -n "${!name:-}" ] || die "set $name to $what"
    [ -d "${!name}" ] || die "$name=${!name} is not a folder ($what)"
}

# require_dataset PREFIX "what PREFIX_ROOT holds": sets ROOT=$PREFIX_ROOT and VIDEOS=${PREFIX_VIDEOS:-$ROOT/videos},
# both existing folders.
require_dataset() {
    local prefix=$1 what=$2 videos_var="${1}_VIDEOS"
    require_dir "${prefix}_ROOT" "$what"
    local root_var="${prefix}_ROOT"
    ROOT=${!root_var}
    VIDEOS=${!videos_var:-$ROOT/videos}
    [ -d "$VIDEOS" ] || die "no video folder $VIDEOS: set $videos_var to the videos compressed by" \
        "preprocess/compress_video.py (default \$${prefix}_ROOT/videos)"
}

# require_file PATH "how to fix": PATH must exist.
require_file() {
    [ -e "$1" ] || die "$1 not found ($2)"
}

NNODES=${NNODES:-1}
if [ -z "${NPROC_PER_NODE:-}" ]; then
    NPROC_PER_NODE=$(nvidia-smi -L 2>/dev/null | grep -c '^GPU' || true)
    [ "$NPROC_PER_NODE" -ge 1 ] || NPROC_PER_NODE=1
fi
SRUN_TASKS=${SLURM_STEP_NUM_TASKS:-${SLURM_NTASKS:-1}}
# one task of an srun step (srun sets SLURM_STEP_ID; an sbatch script or salloc shell has only the job's variables):
# the world is the step
if [ -n "${SLURM_PROCID:-}" ] && [ -n "${SLURM_STEP_ID:-${SLURM_STEPID:-}}" ] && (( SRUN_TASKS > 1 )); then
    NNODES=1
    NPROC_PER_NODE=$SRUN_TASKS
    UNDER_SRUN=1
fi

# split_count N MAX -> prints the smallest k >= N / MAX that divides N (N in k parts of at most MAX).
split_count() {
    local n=$1 max=$2 k
    k=$(( (n + max - 1) / max ))
    while (( n % k != 0 )); do k=$((k + 1)); done
    echo "$k"
}

# split_global_batch GLOBAL MAX_PER_PROCESS -> sets BATCH_SIZE, ACCUM and MICRO_BATCH (docs/TRAINING.md, "The
# recipes' batch plan"). Default, exact: BATCH_SIZE = GLOBAL / processes and ACCUM = 1, so every contrastive loss
# sees the GLOBAL pairs, as released; when BATCH_SIZE > MAX_PER_PROCESS, gradient caching computes that loss's exact
# gradient in micro-batches of MICRO_BATCH <= MAX_PER_PROCESS pairs (--micro_batch_size), for one more forward of
# both encoders per step. ACCUMULATE=1 (opt-in, for speed): BATCH_SIZE <= MAX_PER_PROCESS and ACCUM micro-steps,
# no extra forward, but each loss sees only BATCH_SIZE x processes pairs.
split_global_batch() {
    local global=$1 max=$2 world=$((NPROC_PER_NODE * NNODES)) parts
    (( global % world == 0 )) || die "the global batch $global does not split over $world processes"
    local per=$((global / world))
    parts=$(split_count "$per" "$max")
    case ${ACCUMULATE:-0} in 0|1) ;; *) die "ACCUMULATE=$ACCUMULATE: set 1 (gradient accumulation) or 0 (exact)";; esac
    if [ "${ACCUMULATE:-0}" = 1 ]; then
        ACCUM=$parts
        BATCH_SIZE=$((per / ACCUM))
        MICRO_BATCH=0
        local seen="$global pairs, as released"
        (( ACCUM == 1 )) || seen="$((BATCH_SIZE * world)) pairs, not $global (fewer negatives than released)"
        echo "global batch $global = $BATCH_SIZE per process x $world processes x $ACCUM accumulation steps" \
             "(ACCUMULATE=1): each contrastive loss sees $seen; no extra forward" >&2
    elif (( parts > 1 )); then
        ACCUM=1
        BATCH_SIZE=$per
        MICRO_BATCH=$((per / parts))
        echo "global batch $global = $BATCH_SIZE per process x $world processes, in $parts micro-batches of" \
             "$MICRO_BATCH (--micro_batch_size $MICRO_BATCH, PER_GPU_BATCH=$max): each contrastive loss sees" \
             "$global pairs, as released; cost: one more forward of both encoders per step (gradient caching;" \
             "ACCUMULATE=1 skips it for $((MICRO_BATCH * world))-pair losses)" >&2
    else
        ACCUM=1
        BATCH_SIZE=$per
        MICRO_BATCH=0
        echo "global batch $global = $BATCH_SIZE per process x $world processes: each contrastive loss sees" \
             "$global pairs, as released; no extra cost" >&2
    fi
}

# run_main ARGS...: main.py in one process, under torchrun, or as one task of srun.
run_main() {
    local launcher
    if [ -n "${UNDER_SRUN:-}" ]; then
        launcher=(python)
    elif (( NNODES > 1 )); then
        [ -n "${MASTER_ADDR:-}" ] && [ -n "${NODE_RANK:-}" ] || die "NNODES > 1 needs MASTER_ADDR and NODE_RANK"
        launcher=(torchrun --nnodes "$NNODES" --node_rank "$NODE_RANK" --nproc_per_node "$NPROC_PER_NODE"
                  --master_addr "$MASTER_ADDR" --master_port "${MASTER_PORT:-29500}")
    elif (( NPROC_PER_NODE > 1 )); then
        launcher=(torchrun --standalone --nproc_per_node "$NPROC_PER_NODE")
    else
        launcher=(python)
    fi
    if [ -n "${DRY_RUN:-}" ]; then
        echo "${launcher[*]} main.py $*"
    else
        "${launcher[@]}" main.py "$@"
    fi
}

# train_recipe DATATYPE GLOBAL_BATCH PER_PROCESS_BATCH FLAGS...: train on the train split and evaluate ckpt_best.pt
# on the test split with the settings every released recipe shares (ViT-B/32, AdamW wd 0.2, 10% warm-up then
# cosine, clipping at 1.0, seed 42, mixed precision, STOP prompts), the global batch split over the processes,
# then FLAGS (the dataset's files and recipe, then the user's extra flags, which win).
train_recipe() {
    local datatype=$1 global=$2 per_process=$3
    shift 3
    split_global_batch "$global" "${PER_GPU_BATCH:-$per_process}"
    run_main --do_train --do_eval --datatype "$datatype" \
        --pretrained_dir "$PRETRAINED_DIR" --pretrained_clip_name ViT-B/32 \
        --output_dir "${OUTPUT_DIR:-outputs/${datatype}_$(date +%Y%m%d-%H%M%S)}" \
        --wd 0.2 --warmup_proportion 0.1 --clip_grad_norm 1.0 --seed 42 --temporal_prompt stop \
        --batch_size "$BATCH_SIZE" --gradient_accumulation_steps "$ACCUM" --micro_batch_size "$MICRO_BATCH" \
        --batch_size_val 16 \
        --precision "${PRECISION:-amp}" --num_thread_reader "${NUM_WORKERS:-8}" --n_display 50 \
        "$@"
}

# The CLIP weights: PRETRAINED_DIR must hold OpenAI's ViT-B-32.pt (or the file --pretrained_clip_name names).
require_dir PRETRAINED_DIR "the folder holding OpenAI's CLIP weights (ViT-B-32.pt)"
