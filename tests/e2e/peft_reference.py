"""transformers + peft on the CPU torch: the reference an adapter served by a backend must match.

The LoRA is made by peft itself over the tiny HF llama, with weights large
enough that its greedy tokens differ from the base model's, and saved as a
trainer saves one. The reference answer is transformers' greedy generation
for the same chat the tests send a backend, through the model's own chat
template, with and without the adapter.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from peft import LoraConfig, PeftModel, get_peft_model
from transformers import AutoModelForCausalLM, AutoTokenizer

SEED = 4321
LORA_WEIGHT_SCALE = 0.5
"""The spread of the LoRA's A and B: peft's own init sets B to 0, which would change nothing."""


def write_peft_lora(base_dir: Path, directory: Path, rank: int = 8) -> Path:
    """A LoRA of ``rank`` on q_proj and v_proj, saved by peft in ``directory``; returns it."""
    torch.manual_seed(SEED)
    config = LoraConfig(r=rank, lora_alpha=2 * rank, target_modules=["q_proj", "v_proj"], lora_dropout=0.0)
    model = get_peft_model(_base(base_dir), config)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "lora_" in name:
                parameter.copy_(torch.randn_like(parameter) * LORA_WEIGHT_SCALE)
    model.save_pretrained(str(directory))
    return directory


def greedy_reply(base_dir: Path, adapter_dir: Path | None, prompt: str, max_tokens: int) -> str:
    """transformers' greedy reply to one user message, with the adapter applied when given."""
    # Any: transformers' overloaded signatures do not say what these calls return for these arguments.
    tokenizer: Any = AutoTokenizer.from_pretrained(str(base_dir))
    model: Any = _base(base_dir)
    if adapter_dir is not None:
        model = PeftModel.from_pretrained(model, str(adapter_dir))
    prompt_ids = tokenizer.apply_chat_template(
        [{"role": "user", "content": prompt}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )["input_ids"]
    with torch.no_grad():
        output = model.generate(
            input_ids=prompt_ids,
            attention_mask=torch.ones_like(prompt_ids),
            max_new_tokens=max_tokens,
            do_sample=False,
        )
    reply: str = tokenizer.decode(output[0, prompt_ids.shape[1] :], skip_special_tokens=True)
    return reply


def _base(base_dir: Path) -> Any:
    model: Any = AutoModelForCausalLM.from_pretrained(str(base_dir), dtype=torch.float32)
    return model.eval()
