"""The model layer: pure single-device PyTorch, no I/O, no logging.

    gpt.py     the GPT (RMSNorm, RoPE, SwiGLU) and every ablation option
    optim.py   Muon, the combined Muon+AdamW optimizer, learning-rate schedules
"""
