#!/usr/bin/env bash
# Stage 1 (feature alignment): train only the projector on top of an MMCLIP tower.
# LLaVA-1.5's scripts/v1_5/pretrain.sh with `--vision_tower mmclip:...`; every hyperparameter is theirs.
#
#   MODEL=lmsys/vicuna-7b-v1.5 VISION_TOWER=mmclip:runs/mmclip/final \
#   DATA=LLaVA-Pretrain/blip_laion_cc_sbu_558k.json IMAGE_FOLDER=LLaVA-Pretrain/images \
#   OUTPUT=checkpoints/llava-mmclip-7b-pretrain bash scripts/pretrain.sh [extra upstream args...]
#
# Global batch 256 = NUM_GPUS x BATCH x GRAD_ACCUM (8 x 32 x 1 in LLaVA-1.5). On CPU or a GPU without
# bf16/tf32 set BF16=False TF32=False. DRY_RUN=1 prints the command instead of running it.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

: "${MODEL:?set MODEL to the base LLM (e.g. lmsys/vicuna-7b-v1.5)}"
: "${VISION_TOWER:?set VISION_TOWER=mmclip:<MMCLIP checkpoint dir>}"
: "${DATA:?set DATA to the LLaVA-format pretraining JSON}"
: "${IMAGE_FOLDER:?set IMAGE_FOLDER to the image root of DATA}"
: "${OUTPUT:?set OUTPUT to the output directory}"
ZERO_CONFIG="${ZERO_CONFIG:-$HERE/../llava_patches/zero_configs/zero2.json}"
LAUNCHER="${LAUNCHER:-deepspeed --module}"
ENTRY="${ENTRY:-llava_patches.train_mem}"
BATCH="${BATCH:-32}"
GRAD_ACCUM="${GRAD_ACCUM:-1}"
EPOCHS="${EPOCHS:-1}"
LR="${LR:-1e-3}"
BF16="${BF16:-True}"
TF32="${TF32:-True}"
WORKERS="${WORKERS:-4}"
REPORT_TO="${REPORT_TO:-none}"

cmd=($LAUNCHER "$ENTRY"
    --deepspeed "$ZERO_CONFIG"
    --model_name_or_path "$MODEL"
    --version plain
    --data_path "$DATA"
    --image_folder "$IMAGE_FOLDER"
    --vision_tower "$VISION_TOWER"
    --mm_projector_type mlp2x_gelu
    --tune_mm_mlp_adapter True
    --mm_vision_select_layer -2
    --mm_use_im_start_end False
    --mm_use_im_patch_token False
    --bf16 "$BF16"
    --output_dir "$OUTPUT"
    --num_train_epochs "$EPOCHS"
    --per_device_train_batch_size "$BATCH"
    --per_device_eval_batch_size 4
    --gradient_accumulation_steps "$GRAD_ACCUM"
    --evaluation_strategy no
    --save_strategy steps
    --save_steps 24000
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
    "$@")

if [[ "${DRY_RUN:-0}" == 1 ]]; then printf '%q ' "${cmd[@]}"; echo; else exec "${cmd[@]}"; fi
