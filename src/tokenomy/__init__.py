"""tokenomy: the unit economics of LLM inference, as software you can run."""

__version__ = "0.1.0"
