"""The RFT engine: rollouts, evaluation, GRPO-family updates of a LoRA adapter."""
