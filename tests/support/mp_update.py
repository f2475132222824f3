"""Run under torchrun: one learner update on a fixed global batch, this rank taking its contiguous share.

Rank 0 saves the step's gradient (read back from AdamW's first moment), loss and grad norm to argv[3].
Usage: torchrun --nproc_per_node K tests/support/mp_update.py MODEL_DIR LOSS OUT [ZERO_STAGE [TOKEN_BUDGET]]
With TOKEN_BUDGET (``optim.max_tokens_per_micro_batch``) the global batch is first sorted by completion length,
so that the ranks' shares differ in length and pack into different numbers of micro-batches.
"""

import sys

import torch

from support.helpers import fixed_batch, make_config, step_gradients
from trainer import dist
from trainer.learner import Learner
from trainer.micro_batches import plan_micro_batches


def main() -> None:
    model_dir, loss, out = sys.argv[1], sys.argv[2], sys.argv[3]
    zero = int(sys.argv[4]) if len(sys.argv) > 4 else 0
    budget = int(sys.argv[5]) if len(sys.argv) > 5 else None
    dist.init("cpu")
    world, rank = dist.world(), dist.rank()
    n_prompts, group = 4, 4
    batch, adv = fixed_batch(model_dir, n_prompts, group, seed=11)  # the same global batch on every rank
    if budget is not None:  # short rows on rank 0, long ones on the last rank
        order = batch.completion_mask.sum(dim=1).argsort(stable=True)
        batch, adv = batch.rows(order), adv[order]
    rows = n_prompts * group // world
    share = slice(rank * rows, (rank + 1) * rows)
    cfg = make_config(model_dir, prompts=n_prompts, group_size=group, mbs=4, loss=loss, zero=zero, optim__grad_clip=0.0)
    if budget is not None:
        cfg.optim.max_tokens_per_micro_batch = budget
    learner = Learner(cfg, model_dir, torch.device("cpu"))
    mine = batch.rows(share)
    o = cfg.optim
    plan = plan_micro_batches(mine, torch.arange(rows), o.micro_batch_size, o.max_tokens_per_micro_batch)
    passes = dist.gather_objects(sum(r is not None for r in plan))
    metrics = learner.update(mine, adv[share])
    if zero == 0:
        grads = step_gradients(learner)
    else:  # ZeRO shards optimizer state: compare the updated weights instead (gathered for stage 3)
        import deepspeed

        params = list(learner.module.named_parameters())
        with deepspeed.zero.GatheredParameters([p for _, p in params], enabled=zero == 3):
            grads = {n: p.detach().clone() for n, p in params}
    if rank == 0:
        torch.save({"grads": grads, "loss": metrics["loss"], "grad_norm": metrics["grad_norm"], "passes": passes}, out)
    dist.barrier()
    # tear the process group down before the interpreter does: left to exit, gloo / DeepSpeed's shared-memory
    # communicator threads aborted rank 0 once in ~30 runs ("terminate called without an active exception")
    dist.shutdown()


if __name__ == "__main__":
    main()
