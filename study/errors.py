"""The exception types for problems a user can fix, and help for their messages."""

import difflib


class StudyError(Exception):
    """Bad input or environment: the message names the problem and the fix, on one line.

    The CLI prints it as `error: <message>` and exits non-zero; anything else that escapes is a
    bug and keeps its traceback.
    """


class BadInput(StudyError):
    """A sweep file, a --set value or a data file the command cannot use: the CLI exits 2.

    `problems` lists every problem found, one line each (`study validate` prints them all); the
    message names the first and counts the rest.
    """

    def __init__(self, message: str, problems: list[str] | None = None):
        super().__init__(message)
        self.problems = problems or [message]


def did_you_mean(word, options) -> str:
    """'; did you mean 'x'?' for the closest of `options` to `word`, or '' if none is close."""
    close = difflib.get_close_matches(str(word), [str(o) for o in options], n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""
