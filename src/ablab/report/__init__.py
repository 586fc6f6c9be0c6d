"""The report layer: tables into markdown, HTML and figures. Imports no torch.

    html.py           the lab report: one self-contained HTML page and research_report.md
    templates/        the page's Jinja template (autoescaped), its CSS and its sort script
    sheets.py         the study sheet and the lab log
    figures.py        analysis figures (PNG and SVG)
    study_figures.py  a study's figures
    scaling.py        scaling figures and the report's table of fits
    plots.py          loss curves of runs side by side, for compare
"""
