"""Write the committed JSON Schemas of every event version (`make schemas`).

python -m nova_events.schemas [--directory DIR] [--check]

Exits 1, writing nothing, if a model would break readers of a committed file.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from . import SCHEMAS_DIR, SchemaBreakError, export, outdated


def main(argv: list[str] | None = None) -> int:
    """Export the schemas; with `--check`, exit 1 listing the stale files.

    Exits 1 without writing if a change would break a committed version.
    """
    parser = argparse.ArgumentParser(
        prog="python -m nova_events.schemas", description=__doc__.splitlines()[0]
    )
    parser.add_argument(
        "--directory",
        type=Path,
        default=SCHEMAS_DIR,
        help="where to write <EventType>.v<N>.json (default: the package's own)",
    )
    parser.add_argument(
        "--check",
        action="store_true",
        help="write nothing; exit 1 if a file is missing or differs",
    )
    args = parser.parse_args(argv)
    if args.check:
        stale = outdated(args.directory)
        for path in stale:
            sys.stderr.write(f"out of date: {path}\n")
        if stale:
            sys.stderr.write("run `make schemas` and commit the result\n")
        return 1 if stale else 0
    try:
        written = export(args.directory)
    except SchemaBreakError as exc:
        sys.stderr.write(f"{exc}\n")
        return 1
    for path in written:
        sys.stdout.write(f"wrote {path}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
