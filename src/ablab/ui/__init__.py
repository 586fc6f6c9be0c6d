"""`ablab ui`: a local, live dashboard of a lab, reading its ledger read-only (never torch, training,
executors or studies; the layer of ablab.report).

    views.py    what each JSON endpoint answers, from ablab.analysis' readers on a ReadOnlyLedger
    server.py   the Starlette app, the loopback-only socket, uvicorn (the optional `ui` extra)
    static/     the page: index.html, app.js, style.css, and uPlot vendored under vendor/ (no network)
"""
