#!/usr/bin/env bash
# Stage 2 (visual instruction tuning): projector + LLM, starting from stage 1's mm_projector.bin.
# LLaVA-1.5's scripts/v1_5/finetune.sh with `--vision_tower mmclip:...`; every hyperparameter is theirs.
#
#   MODEL=lmsys/vicuna-7b-v1.5 VISION_TOWER=mmclip:runs/mmclip/final \
#   PROJECTOR=checkpoints/llava-mmclip-7b-pretrain/mm_projector.bin \
#   DATA=llava_v1_5_mix665k.json IMAGE_FOLDER=playground/data \
#   OUTPUT=checkpoints/llava-mmclip-7b bash scripts/finetune.sh [extra upstream args...]
#
# ZERO=zero3 (LLaVA-1.5's choice) or zero2 (the MMGeoLM paper's); global batch 128 = NUM_GPUS x BATCH x
# GRAD_ACCUM. Train the tower too (LLaVA-NeXT style): UNFREEZE_TOWER=True [TOWER_LR=2e-6]; the trained
# tower is saved as OUTPUT/mmclip_tower and the checkpoint's config points at it. DRY_RUN=1 prints the command.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

: "${MODEL:?set MODEL to the base LLM (e.g. lmsys/vicuna-7b-v1.5)}"
: "${VISION_TOWER:?set VISION_TOWER=mmclip:<MMCLIP checkpoint dir>}"
: "${PROJECTOR:?set PROJECTOR to the stage-1 mm_projector.bin}"
: "${DATA:?set DATA to the LLaVA-format instruction JSON}"
: "${IMAGE_FOLDER:?set IMAGE_FOLDER to the image root of DATA}"
: "${OUTPUT:?set OUTPUT to the output directory}"
ZERO="${ZERO:-zero3}"
ZERO_CONFIG="${ZERO_CONFIG:-$HERE/../llava_patches/zero_configs/$ZERO.json}"
LAUNCHER="${LAUNCHER:-deepspeed --module}"
ENTRY="${ENTRY:-llava_patches.train_mem}"
VERSION="${VERSION:-v1}"
BATCH="${BATCH:-16}"
GRAD_ACCUM="${GRAD_ACCUM:-1}"
EPOCHS="${EPOCHS:-1}"
LR="${LR:-2e-5}"
BF16="${BF16:-True}"
TF32="${TF32:-True}"
WORKERS="${WORKERS:-4}"
REPORT_TO="${REPORT_TO:-none}"
UNFREEZE_TOWER="${UNFREEZE_TOWER:-False}"

tower_args=(--unfreeze_mm_vision_tower "$UNFREEZE_TOWER")
if [[ -n "${TOWER_LR:-}" ]]; then tower_args+=(--mm_vision_tower_lr "$TOWER_LR"); fi

cmd=($LAUNCHER "$ENTRY"
    --deepspeed "$ZERO_CONFIG"
    --model_name_or_path "$MODEL"
    --version "$VERSION"
    --data_path "$DATA"
    --image_folder "$IMAGE_FOLDER"
    --vision_tower "$VISION_TOWER"
    --pretrain_mm_mlp_adapter "$PROJECTOR"
    --mm_projector_type mlp2x_gelu
    --mm_vision_select_layer -2
    --mm_use_im_start_end False
    --mm_use_im_patch_token False
    --image_aspect_ratio pad
    --group_by_modality_length True
    --bf16 "$BF16"
    --output_dir "$OUTPUT"
    --num_train_epochs "$EPOCHS"
    --per_device_train_batch_size "$BATCH"
    --per_device_eval_batch_size 4
    --gradient_accumulation_steps "$GRAD_ACCUM"
    --evaluation_strategy no
    --save_strategy steps
    --save_steps 50000
    --save_total_limit 1
    --learning_rate "$LR"
    --weight_decay 0.
    --warmup_ratio 0.03
    --lr_scheduler_type cosine
    --logging_steps 1
    --tf32 "$TF32"
    --model_max_length 2048
    --gradient_checkpointing True
    --dataloader_num_workers "$WORKERS"
    --lazy_preprocess True
    --report_to "$REPORT_TO"
    "${tower_args[@]}"
    "$@")

if [[ "${DRY_RUN:-0}" == 1 ]]; then printf '%q ' "${cmd[@]}"; echo; else exec "${cmd[@]}"; fi
