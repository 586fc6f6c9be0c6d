"""The study layer: plans and runs studies, baselines, tiers and ladders.

    spec.py        the study spec: parse, arms, the refusals; the study template
    baselines.py   dated baselines: files, registration, current one, promotion
    runner.py      plan (with a measured probe) and run
    benchmarks.py  a study's benchmarks: score each run once
    tiers.py       three-tier baselines and the plan's consistency checks
    ladder.py      scaling ladders: a baseline at several sizes and budgets, run like a study
"""
