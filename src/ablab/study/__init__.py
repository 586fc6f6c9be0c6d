"""The study layer: plans and runs studies, baselines, tiers and ladders.

    spec.py        the study spec: parse, arms, the refusals; the study template
    baselines.py   dated baselines: files, registration, current one, promotion
    runner.py      plan (reused / to train / to resume per arm) and run
    estimates.py   what an arm costs: parameters, FLOPs, memory, seconds per step (measured)
    benchmarks.py  a study's benchmarks: score each run once
    tiers.py       three-tier baselines and the plan's consistency checks
    ladder.py      scaling ladders: a baseline at several sizes and budgets, run like a study
"""
