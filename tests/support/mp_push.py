"""Run under torchrun: every rank a ZeRO-3 learner, the broadcast push to running servers, the probe after it.

The servers hold other weights than this learner's start: the first push gives them ours and the start-up
probe (``verify``: every rank's learner forward, collective under ZeRO-3) must find the servers' log-probs
equal to the learner's; then one update on a fixed batch, a second push and the probe again. Rank 0 writes
the walks of the weights each rank made and the versions to argv[3].
Usage: torchrun --nproc_per_node K tests/support/mp_push.py MODEL_DIR URLS OUT   (GROUPWISE_SERVER_SECRET set)
"""

import json
import sys

import torch
from transformers import AutoTokenizer

from support.helpers import fixed_batch, make_config
from trainer import dist
from trainer.backends import build_backend
from trainer.learner import Learner


def main() -> None:
    model_dir, urls, out = sys.argv[1], sys.argv[2], sys.argv[3]
    dist.init("cpu")
    cfg = make_config(model_dir, prompts=2, group_size=4, max_new_tokens=16, mbs=4, lr=3e-3, zero=3)
    cfg.data.max_prompt_tokens = 64
    cfg.rollout.backend, cfg.rollout.server.urls, cfg.rollout.server.push = "server", urls, "broadcast"
    learner = Learner(cfg, model_dir, torch.device("cpu"))
    backend = build_backend(cfg, learner, model_dir, AutoTokenizer.from_pretrained(model_dir), torch.device("cpu"))
    walks = [0]
    full = backend.named_tensors

    def counted():
        walks[0] += 1
        yield from full()

    backend.named_tensors = counted
    backend.sync_weights()  # ours replace the servers' weights; verify() probes every server (collective)
    batch, adv = fixed_batch(model_dir, 2, 4, seed=5)
    share = slice(dist.rank() * 4, dist.rank() * 4 + 4)
    learner.update(batch.rows(torch.arange(8)[share]), adv[share])
    backend.sync_weights()
    backend.unverified = set(backend.urls)
    backend.verify()  # the probe on the pushed weights, every server: raises ServerMismatch on a gap
    result = {"walks": dist.gather_objects(walks[0]), "version": backend.version, "live": backend.live}
    if dist.rank() == 0:
        with open(out, "w") as f:
            json.dump(result, f)
    backend.close()
    dist.barrier()
    dist.shutdown()


if __name__ == "__main__":
    main()
