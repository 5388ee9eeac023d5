#!/usr/bin/env bash
# Start `imgsynth` training on every node of an Azure ML `distribution: pytorch` job.
# Azure ML sets MASTER_ADDR, MASTER_PORT, NODE_RANK and WORLD_SIZE (= nodes when one
# process runs per node); accelerate then starts GPUS_PER_NODE processes per node.
# Usage: launch_train.sh DATASET_DIR RUN_DIR [imgsynth train options...]
set -euo pipefail
dataset=$1; run=$2; shift 2
nodes=${WORLD_SIZE:-1}
gpus=${GPUS_PER_NODE:-$(python -c "import torch; print(max(torch.cuda.device_count(), 1))")}
total=$((nodes * gpus))
multi=(); [ "$total" -gt 1 ] && multi=(--multi_gpu)
# Mixed precision comes from the config (loop.mixed_precision), which the Accelerator is given.
exec accelerate launch \
  "${multi[@]}" --mixed_precision no --dynamo_backend no \
  --num_machines "$nodes" --machine_rank "${NODE_RANK:-0}" \
  --main_process_ip "${MASTER_ADDR:-127.0.0.1}" --main_process_port "${MASTER_PORT:-29500}" \
  --num_processes "$total" \
  "$(dirname "$0")/../scripts/train.py" "$dataset" "$run" "$@"
