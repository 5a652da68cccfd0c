"""python -m analysis {collect,plots,report} DIR [DIR ...] --out PATH (see analysis/__init__.py)."""

import argparse
import sys
from pathlib import Path

from ablations import cli

from .collect import aggregate, collect


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m analysis", description="Tables, figures and a report from runs.")
    commands = parser.add_subparsers(dest="command", required=True)
    for name, help_text, out_help in (
        ("collect", "one table of finished runs (CSV), and one aggregated over seeds", "CSV path for the runs table"),
        ("plots", "the paper's figures from the runs, beside the published points", "folder for the PNG/SVG files"),
        ("report", "markdown and self-contained HTML report: tables, figures, paper comparison", "report folder"),
    ):
        command = commands.add_parser(name, help=help_text)
        command.add_argument("directories", nargs="+", metavar="DIR", help="results directories (run records)")
        command.add_argument("--out", required=True, type=Path, help=out_help)
    args = parser.parse_args(argv)

    collection = collect(args.directories)
    for _, message in collection.skipped:
        print(f"left out {message}", file=sys.stderr)
    print(collection.summary(), file=sys.stderr)
    if args.command == "collect":
        args.out.parent.mkdir(parents=True, exist_ok=True)
        collection.runs.to_csv(args.out, index=False)
        cells = args.out.with_name(args.out.stem + "_by_cell.csv")
        aggregate(collection.runs).to_csv(cells, index=False)
        print(f"{args.out} ({len(collection.runs)} runs), {cells} (mean, std and number of seeds per cell)")
        if not collection.detection.empty:
            detection_runs = args.out.with_name(args.out.stem + "_detection.csv")
            collection.detection.to_csv(detection_runs, index=False)
            print(f"{detection_runs} ({len(collection.detection)} Detectron2 runs)")
    elif args.command == "plots":
        from .plots import all_figures

        figures = all_figures(collection, args.out)
        print(f"{len(figures)} figures in {args.out}: " + ", ".join(f.name for f in figures))
    else:
        from .report import write_report

        markdown, html = write_report(collection, args.out)
        print(f"report: {html} (and {markdown})")
    return 0


if __name__ == "__main__":
    cli.run(main, "analysis")
