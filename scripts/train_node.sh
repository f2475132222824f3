#!/usr/bin/env bash
# One node, N processes (GPUs, or CPU ranks over gloo): scripts/train_node.sh NPROC [groupwise train args...]
# e.g. scripts/train_node.sh 8 -c configs/smoke.yaml loss.name=gspo
set -euo pipefail
source "$(dirname "$0")/_venv.sh"
nproc=${1:?usage: scripts/train_node.sh NPROC [train args...]}
shift
exec torchrun --standalone --nproc_per_node "$nproc" -m app.cli train "$@"
