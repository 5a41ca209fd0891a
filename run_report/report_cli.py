"""`python -m run_report.report_cli RUN_DIR`: writes RUN_DIR/report.html and prints its path."""

from __future__ import annotations

import argparse
import sys

from run_report.html_report import write_report
from run_report.run_files import NotARunDirectory


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m run_report.report_cli",
                                     description="Write report.html, a self-contained HTML report of a finished run.")
    parser.add_argument("run_dir", metavar="RUN_DIR", help="a run directory (it holds run.json)")
    args = parser.parse_args(argv)
    try:
        path = write_report(args.run_dir)
    except NotARunDirectory as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # e.g. a read-only run directory
        print(f"error: cannot write the report: {exc}", file=sys.stderr)
        return 1
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
