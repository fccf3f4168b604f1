"""`config.json` of the Llama family (llama, qwen2, mistral) to and from `LlamaConfig`.

Read in both formats found in the wild: the hub's (`rope_theta` at the top, `rope_scaling` with
`rope_type`/`type`) and what transformers 5 writes (`rope_parameters` holding both).
"""

from __future__ import annotations

from typing import Any

from cpt.models.llama import LlamaConfig

MODEL_TYPES = ("llama", "qwen2", "mistral")
_ARCHITECTURES = {
    "llama": "LlamaForCausalLM",
    "qwen2": "Qwen2ForCausalLM",
    "mistral": "MistralForCausalLM",
}
_SCALING_KEYS = (
    "factor",
    "low_freq_factor",
    "high_freq_factor",
    "original_max_position_embeddings",
)


def llama_config_from_hf(values: dict[str, Any]) -> LlamaConfig:
    model_type = values["model_type"]
    rope = dict(values.get("rope_parameters") or {})
    scaling = dict(values.get("rope_scaling") or {})
    rope_type = (
        rope.get("rope_type") or scaling.get("rope_type") or scaling.get("type") or "default"
    )
    theta = rope.get("rope_theta", values.get("rope_theta", 10000.0))
    rope_scaling = None
    if rope_type != "default":
        source = rope if rope_type == rope.get("rope_type") else scaling
        rope_scaling = {
            "rope_type": rope_type,
            **{k: source[k] for k in _SCALING_KEYS if k in source},
        }
    if model_type == "qwen2":
        qkv_bias, o_bias = True, False
        if values.get("use_sliding_window"):
            raise ValueError("use_sliding_window=true is not supported (full attention only)")
    else:
        qkv_bias = o_bias = bool(values.get("attention_bias", False))
    return LlamaConfig(
        vocab_size=values["vocab_size"],
        hidden_size=values["hidden_size"],
        num_hidden_layers=values["num_hidden_layers"],
        num_attention_heads=values["num_attention_heads"],
        num_key_value_heads=values.get("num_key_value_heads") or values["num_attention_heads"],
        intermediate_size=values["intermediate_size"],
        max_position_embeddings=values.get("max_position_embeddings", 4096),
        rms_norm_eps=values.get("rms_norm_eps", 1e-6),
        rope_theta=float(theta),
        rope_scaling=rope_scaling,
        qkv_bias=qkv_bias,
        o_bias=o_bias,
        mlp_bias=bool(values.get("mlp_bias", False)),
        tie_word_embeddings=bool(values.get("tie_word_embeddings", False)),
        head_dim=values.get("head_dim"),
        initializer_range=values.get("initializer_range", 0.02),
        model_type=model_type,
    )


def llama_config_to_hf(config: LlamaConfig) -> dict[str, Any]:
    scaling = dict(config.rope_scaling) if config.rope_scaling else None
    values: dict[str, Any] = {
        "architectures": [_ARCHITECTURES[config.model_type]],
        "model_type": config.model_type,
        "vocab_size": config.vocab_size,
        "hidden_size": config.hidden_size,
        "intermediate_size": config.intermediate_size,
        "num_hidden_layers": config.num_hidden_layers,
        "num_attention_heads": config.num_attention_heads,
        "num_key_value_heads": config.num_key_value_heads,
        "head_dim": config.head_size,
        "max_position_embeddings": config.max_position_embeddings,
        "rms_norm_eps": config.rms_norm_eps,
        "hidden_act": "silu",
        "rope_theta": config.rope_theta,
        "rope_scaling": scaling,
        "rope_parameters": {
            "rope_type": "default",
            "rope_theta": config.rope_theta,
            **(scaling or {}),
        },
        "tie_word_embeddings": config.tie_word_embeddings,
        "mlp_bias": config.mlp_bias,
        "initializer_range": config.initializer_range,
        "torch_dtype": "float32",
    }
    if config.model_type != "qwen2":
        if config.qkv_bias != config.o_bias:
            raise ValueError(f"{config.model_type} cannot express qkv_bias != o_bias")
        values["attention_bias"] = config.qkv_bias
    return values
