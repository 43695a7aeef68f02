"""An OpenAI-compatible LLM gateway whose every cent is accounted for by one pricing core."""

__version__ = "0.1.0"
