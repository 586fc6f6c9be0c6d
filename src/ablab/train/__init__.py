"""The train layer: the loop and the one door through which every caller gets a finished run.

    launch.py       THE way to get a finished run: the content-key reuse check, then training
    loop.py         the training loop: budgets, eval, metrics, events, signals, resume
    distributed.py  data-parallel runs: torchrun launch, DDP, rank 0 records
    hardware.py     device choice, measured matmul peak, peak memory, allocator setup
    mirrors.py      optional copies of metrics in W&B, MLflow, TensorBoard
    sampling.py     a run's model from its newest checkpoint; text continued from a prompt
    preflight.py    overfit-one-batch sanity check
    export_hf.py    a run as a transformers Llama checkpoint
"""
