import sys

from study.cli import main

code = main()
# CPython 3.11: a KeyboardInterrupt raised inside eval()/exec() of a string (collections.namedtuple,
# while a library is imported) leaves "an interrupt went unhandled" set even once it is caught, and
# `python -m` then ends the process by SIGINT (-2) instead of with our exit code 130; running any
# code string clears it.
exec("pass")
sys.exit(code)
