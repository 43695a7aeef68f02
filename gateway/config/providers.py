"""Which wire format each provider speaks, its default API base and its usual key variable."""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType

__all__ = ["ProviderDefaults", "defaults_for"]


@dataclass(frozen=True, slots=True)
class ProviderDefaults:
    wire: str  # "openai" (fast path), "anthropic" (our adapter) or "litellm" (litellm translation)
    api_base: str | None
    key_env: str | None


_KNOWN = MappingProxyType(
    {
        "openai": ProviderDefaults("openai", "https://api.openai.com/v1", "OPENAI_API_KEY"),
        "anthropic": ProviderDefaults("anthropic", "https://api.anthropic.com", "ANTHROPIC_API_KEY"),
        "deepseek": ProviderDefaults("openai", "https://api.deepseek.com/v1", "DEEPSEEK_API_KEY"),
        "groq": ProviderDefaults("openai", "https://api.groq.com/openai/v1", "GROQ_API_KEY"),
        "together_ai": ProviderDefaults("openai", "https://api.together.xyz/v1", "TOGETHERAI_API_KEY"),
        "mistral": ProviderDefaults("openai", "https://api.mistral.ai/v1", "MISTRAL_API_KEY"),
        "xai": ProviderDefaults("openai", "https://api.x.ai/v1", "XAI_API_KEY"),
        "fireworks_ai": ProviderDefaults("openai", "https://api.fireworks.ai/inference/v1", "FIREWORKS_API_KEY"),
        "openrouter": ProviderDefaults("openai", "https://openrouter.ai/api/v1", "OPENROUTER_API_KEY"),
        "deepinfra": ProviderDefaults("openai", "https://api.deepinfra.com/v1/openai", "DEEPINFRA_API_KEY"),
        "cerebras": ProviderDefaults("openai", "https://api.cerebras.ai/v1", "CEREBRAS_API_KEY"),
        "sambanova": ProviderDefaults("openai", "https://api.sambanova.ai/v1", "SAMBANOVA_API_KEY"),
        "perplexity": ProviderDefaults("openai", "https://api.perplexity.ai", "PERPLEXITYAI_API_KEY"),
        "nvidia_nim": ProviderDefaults("openai", "https://integrate.api.nvidia.com/v1", "NVIDIA_NIM_API_KEY"),
        "lm_studio": ProviderDefaults("openai", "http://127.0.0.1:1234/v1", None),
        "ollama": ProviderDefaults("openai", "http://127.0.0.1:11434/v1", None),
        "vllm": ProviderDefaults("openai", None, None),
        "hosted_vllm": ProviderDefaults("openai", None, None),
        "openai_compatible": ProviderDefaults("openai", None, None),
    }
)


def defaults_for(provider: str) -> ProviderDefaults:
    """Known providers; anything else is translated by litellm with its own defaults."""
    return _KNOWN.get(provider) or ProviderDefaults("litellm", None, f"{provider.upper()}_API_KEY")
