"""Running a command-line entry point: bad input is one line on stderr and exit status 2, not a traceback.

Crashes during a run (a bug, an out-of-memory) keep their traceback: that is what one needs to debug them.
"""

import sys
from typing import Callable

from .config import ConfigError
from .records import RecordError, RunBusy

BAD_INPUT = (ConfigError, RecordError, RunBusy, FileNotFoundError)


def run(main: Callable, program: str) -> None:
    """sys.exit with main()'s status (None: 0), or with one line naming the problem."""
    try:
        status = main()
    except BAD_INPUT as error:
        print(f"{program}: error: {error}", file=sys.stderr)
        sys.exit(2)
    sys.exit(status if isinstance(status, int) else 0)
