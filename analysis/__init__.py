"""Analysis of run records: collect them into tables, redraw the paper's figures, write a report.

python -m analysis collect DIR [DIR ...] --out runs.csv
python -m analysis plots DIR [DIR ...] --out FIG_DIR
python -m analysis report DIR [DIR ...] --out REPORT_DIR
"""
