"""``python -m fewshot.serve --root DIR``: the same as ``fewshot serve``."""

from __future__ import annotations

import argparse
import sys

from fewshot.cli.common import quiet_libraries
from fewshot.cli.serve import add_arguments, cmd_serve
from fewshot.errors import FewShotError


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m fewshot.serve", description="Serve fewshot models and indexes over HTTP."
    )
    add_arguments(p)
    args = p.parse_args(argv)
    quiet_libraries()
    try:
        return cmd_serve(args)
    except (FewShotError, OSError) as exc:
        print(f"fewshot: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
