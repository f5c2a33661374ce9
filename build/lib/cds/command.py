"""The `cds` command. It is the pipeline's CLI (`cds.pipeline.cli`), which needs the `pipeline`
extra; without it, the command says which extra to install instead of a traceback."""

from __future__ import annotations

import sys

from cds.extras import EXTRA_OF, missing_extra_message


def main() -> None:
    """Entry point of the `cds` console script."""
    if sys.argv[1:] == ["--version"]:  # answered without the pipeline's imports
        from cds import __version__

        print(f"cds {__version__}")
        return
    try:
        from cds.pipeline.cli import app
    except ModuleNotFoundError as err:
        top = (err.name or "").split(".")[0]
        if top not in EXTRA_OF:
            raise
        sys.stderr.write(f"error: {missing_extra_message(top, 'the cds command')}\n")
        raise SystemExit(2) from None
    app()
