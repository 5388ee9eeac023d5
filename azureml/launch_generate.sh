#!/usr/bin/env bash
# Start `imgsynth generate` on every node of an Azure ML `distribution: pytorch` job: one process
# per GPU on every node, all splitting one sample set between them (each sample made once;
# re-submitting the job resumes an interrupted set). Azure ML sets MASTER_ADDR, MASTER_PORT,
# NODE_RANK and WORLD_SIZE (= nodes when one launcher runs per node).
# Usage: launch_generate.sh CHECKPOINT OUT_DIR [imgsynth generate options...]
set -euo pipefail
checkpoint=$1; out=$2; shift 2
nodes=${WORLD_SIZE:-1}
gpus=${GPUS_PER_NODE:-$(python -c "import torch; print(max(torch.cuda.device_count(), 1))")}
total=$((nodes * gpus))
multi=(); [ "$total" -gt 1 ] && multi=(--multi_gpu)
exec accelerate launch \
  "${multi[@]}" --mixed_precision no --dynamo_backend no \
  --num_machines "$nodes" --machine_rank "${NODE_RANK:-0}" \
  --main_process_ip "${MASTER_ADDR:-127.0.0.1}" --main_process_port "${MASTER_PORT:-29500}" \
  --num_processes "$total" \
  -m imgsynth generate "$checkpoint" "$out" "$@"
