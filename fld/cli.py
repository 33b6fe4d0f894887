"""The tools' error convention: a problem with the user's input ends the command with one
line ``TOOL: error: MESSAGE`` on stderr and exit status 1, not a traceback.

Input problems are ValueError (``AnnotationError``, ``ImageError``, ``MetadataError``
... all name their file) and OSError (missing or unwritable files). Set
``FLD_TRACEBACK=1`` to see the traceback as well.
"""

from __future__ import annotations

import functools
import os
import sys

INPUT_ERRORS = (ValueError, OSError)


def one_line_errors(main, tool: str | None = None):
    """Wraps an absl ``main(argv)``: input errors become one ``error:`` line, exit 1."""
    name = tool or os.path.basename(sys.argv[0])

    @functools.wraps(main)
    def wrapped(argv):
        try:
            return main(argv)
        except INPUT_ERRORS as e:
            if os.environ.get("FLD_TRACEBACK"):
                raise
            message = " ".join(str(e).split()) or type(e).__name__
            print(f"{name}: error: {message}", file=sys.stderr)
            sys.exit(1)

    return wrapped


def short_error(error: BaseException, limit: int = 300) -> str:
    """An exception's message on one line, cut to ``limit`` characters (some libraries
    list every layer of a model in theirs)."""
    text = " ".join(str(error).split()) or type(error).__name__
    return text if len(text) <= limit else text[:limit] + f" ... ({len(text)} characters)"
