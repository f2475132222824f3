#!/usr/bin/env bash
# Several nodes: run this on every node with the same arguments. The rendezvous comes from the environment
# (what SLURM / Kubernetes launchers set), so the script itself never changes between clusters:
#   NNODES       number of nodes                      (default 1)
#   NODE_RANK    this node's index, 0..NNODES-1       (default $SLURM_NODEID or 0)
#   MASTER_ADDR  host name / IP of node 0             (required when NNODES > 1)
#   MASTER_PORT  free TCP port on node 0              (default 29500)
#   GPUS_PER_NODE                                      (default: all visible GPUs)
#   RDZV_ID      job id shared by the nodes            (default $SLURM_JOB_ID or "groupwise")
# e.g. NNODES=2 NODE_RANK=0 MASTER_ADDR=node0 scripts/train_multinode.sh -c configs/base_gpu.yaml -c configs/gspo.yaml
set -euo pipefail
source "$(dirname "$0")/_venv.sh"
nnodes=${NNODES:-1}
node_rank=${NODE_RANK:-${SLURM_NODEID:-0}}
port=${MASTER_PORT:-29500}
gpus=${GPUS_PER_NODE:-$(python -c "import torch; print(max(1, torch.cuda.device_count()))")}
if [[ "$nnodes" -gt 1 && -z "${MASTER_ADDR:-}" ]]; then
  echo "train_multinode.sh: set MASTER_ADDR to node 0's address (and NODE_RANK on each node)" >&2
  exit 2
fi
exec torchrun \
  --nnodes "$nnodes" --node_rank "$node_rank" --nproc_per_node "$gpus" \
  --rdzv_backend c10d --rdzv_endpoint "${MASTER_ADDR:-localhost}:$port" --rdzv_id "${RDZV_ID:-${SLURM_JOB_ID:-groupwise}}" \
  -m app.cli train "$@"
