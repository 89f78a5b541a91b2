"""Training on our exports with TRL (SFT, DPO, GRPO), LoRA via peft or full fine-tuning.

Training never imports rollout internals: it reads an exported file (`trl-sft`, `trl-dpo`,
`trl-grpo`) and a model folder, and writes a model folder that the `local` backend and
`transformers serve` load. See docs/train.md.
"""
