"""The build's parity check of the vLLM engine, run by the repository builder in the vLLM
python environment: greedy tokens for the given prompt ids, as the served model decodes them.

    <vllm-env>/bin/python -m triton_models.generate_vllm.check < request.json

``request.json``: ``{"folder", "dtype", "max_model_len", "tokens", "eos": [ids],
"prompts": [[ids], ...], "out": path}``; written to ``out`` (vLLM logs to stdout):
``{"tokens": [[ids], ...]}`` in prompt order (end of sequence ids left out).
"""

from __future__ import annotations

import json
import os
import sys


def main() -> None:
    asked = json.load(sys.stdin)
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"  # one process: the check is short
    os.environ["VLLM_NO_USAGE_STATS"] = "1"
    from vllm import LLM, SamplingParams
    from vllm.inputs import TokensPrompt

    llm = LLM(
        model=asked["folder"],
        dtype=asked["dtype"],
        max_model_len=int(asked["max_model_len"]),
        max_num_seqs=max(1, len(asked["prompts"])),
        enforce_eager=True,
        seed=0,
    )
    eos = {int(i) for i in asked["eos"]}
    sampling = SamplingParams(
        max_tokens=int(asked["tokens"]), temperature=0.0, stop_token_ids=sorted(eos)
    )
    prompts = [TokensPrompt(prompt_token_ids=ids) for ids in asked["prompts"]]
    outputs = llm.generate(prompts, sampling, use_tqdm=False)
    tokens = [[t for t in out.outputs[0].token_ids if t not in eos] for out in outputs]
    with open(asked["out"], "w", encoding="utf-8") as out:
        json.dump({"tokens": tokens}, out)


if __name__ == "__main__":
    main()
