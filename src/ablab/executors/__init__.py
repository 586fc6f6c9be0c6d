"""The executors layer: where a study's runs execute, never what they compute.

    base.py    Task, Result, Retry, the Executor interface, inline execution, the registry by name
    pool.py    worker side (a ledger proxy) and the driver loop every multi-process executor shares
    local.py   local worker processes talking to the driver through a queue
    remote.py  ray and slurm (submitit) workers talking to the driver through a spool of files
    spool.py   those files: one line of JSON per message, checked against its schema on the driver
"""
