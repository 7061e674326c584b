import sys


def entry() -> None:
    """`study` (the console script) and `python -m study`: Ctrl+C is recorded from the first moment,
    before the imports (one that lands in a finalizer run while a library is imported is dropped by
    Python, and would otherwise leave the sweep running); one during the imports exits 130. The
    module that records it is imported here, in the same guard, and imports little: before it, a
    Ctrl+C is Python's (one during `python`'s own start-up ends it as Python does)."""
    try:
        from study.processes import catch_interrupts

        catch_interrupts()
        from study.cli import main
    except KeyboardInterrupt:  # stop as `main` would
        print("interrupted", file=sys.stderr)
        code = 130
    else:
        code = main()
    # CPython 3.11: a KeyboardInterrupt raised inside eval()/exec() of a string (collections.namedtuple,
    # while a library is imported) leaves "an interrupt went unhandled" set even once it is caught, and
    # `python -m` then ends the process by SIGINT (-2) instead of with our exit code 130; running any
    # code string clears it.
    exec("pass")
    sys.exit(code)


if __name__ == "__main__":
    entry()
