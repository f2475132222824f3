"""The vLLM backend on a GPU node: the same contract as the hf backend, and the weight-sync round trip.

Skipped, with the reason, where vllm does not import or there is no CUDA (this CPU machine). Written to run
as is on a GPU node after `make setup-gpu`: `pytest -m vllm tests/test_vllm.py`.
"""

import pytest
import torch

from rollout.vllm_backend import vllm_available

OK, WHY = vllm_available()
pytestmark = [pytest.mark.vllm, pytest.mark.gpu, pytest.mark.skipif(not OK, reason=WHY)]


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    """A tiny Qwen2 (bf16) with a learner-side copy on the GPU and a colocated vLLM engine on the same files."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from rollout.vllm_backend import VLLMBackend
    from trainer import dist
    from trainer.tiny import save_tiny

    dist.init("cuda")
    path = str(save_tiny(tmp_path_factory.mktemp("m") / "tiny", seed=0, hidden=128, layers=2))
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.bfloat16).cuda().eval()
    backend = VLLMBackend(
        path,
        tok,
        24,
        temperature=1.0,
        dtype="bf16",
        named_tensors=lambda: ((n, p.detach()) for n, p in model.named_parameters()),
        gpu_memory_utilization=0.2,
        sleep=True,
    )
    return backend, model, tok


def engine_logprobs(backend, ids: list[int], n_prompt: int) -> torch.Tensor:
    """The engine's log-probs of the tokens after ``n_prompt`` in ``ids`` (prompt log-probs, temperature 1)."""
    from vllm import SamplingParams
    from vllm.inputs import TokensPrompt

    backend.wake()
    (out,) = backend.llm.generate(
        [TokensPrompt(prompt_token_ids=ids)], SamplingParams(max_tokens=1, prompt_logprobs=0), use_tqdm=False
    )
    backend.sleep()
    return torch.tensor([out.prompt_logprobs[i][ids[i]].logprob for i in range(n_prompt, len(ids))])


def learner_logprobs(model, ids: list[int], n_prompt: int) -> torch.Tensor:
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids], device="cuda")).logits[0].float()
    logp = logits.log_softmax(-1)
    return torch.stack([logp[i - 1, ids[i]] for i in range(n_prompt, len(ids))]).cpu()


def test_contract_groups_finish_reasons_logprobs(engine):
    from rollout.base import encode_prompt

    backend, model, tok = engine
    prompts = [encode_prompt(tok, "1+1"), encode_prompt(tok, "2+3")]
    comps = backend.generate(prompts, 4, seed=0)
    assert len(comps) == 8 and [c.prompt_ids for c in comps[:4]] == [prompts[0]] * 4
    for c in comps:
        assert c.finish_reason in ("stop", "length") and len(c.logprobs) == len(c.token_ids) <= 24
        assert (c.finish_reason == "length") == (len(c.token_ids) == 24 and c.token_ids[-1] != tok.eos_token_id)
        # the sampler's log-probs match the learner's on the sampled tokens, within bf16 tolerance
        ref = learner_logprobs(model, c.prompt_ids + c.token_ids, len(c.prompt_ids))
        assert torch.allclose(torch.tensor(c.logprobs), ref, atol=0.1), (c.logprobs[:5], ref[:5])


def test_weight_sync_round_trip(engine):
    backend, model, tok = engine
    ids = tok("12+30=42\n\\boxed{42}", add_special_tokens=False)["input_ids"]
    before = engine_logprobs(backend, ids, 1)
    with torch.no_grad():  # perturb the learner: the engine must not see it until sync
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    moved = learner_logprobs(model, ids, 1)
    assert torch.allclose(engine_logprobs(backend, ids, 1), before)
    assert (moved - before).abs().max() > 0.1
    backend.sync_weights()
    after = engine_logprobs(backend, ids, 1)
    assert torch.allclose(after, moved, atol=0.05), (after - moved).abs().max()
