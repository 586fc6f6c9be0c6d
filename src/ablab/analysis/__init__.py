"""The analysis layer: reads the store and returns tables. Imports no torch.

    stats.py         SciPy statistics: CIs, paired and Welch tests, bootstrap, Holm, power, verdict rules
    runs.py          tables of runs from the ledger: list, show, diff, compare
    crossrun.py      benchmark correlations, arms' compute-efficiency gains, run dynamics
    scaling_laws.py  compute conventions; power-law and Chinchilla fits with bootstrap intervals
    scaling.py       IsoFLOP analysis, efficiency gain and its trend, tokens to a share of the improvement
    scaling_data.py  points from the ledger or a CSV; the frontier; fitting, storing and loading laws
"""
