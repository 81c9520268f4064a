"""rftlab: a config-driven launcher for reinforcement fine-tuning jobs."""

__version__ = "0.1.0"
