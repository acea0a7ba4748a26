"""What every command-line script shares: the parser, flag declaration, the
configuration block, log time stamps, and turning a UserError into one line."""
import argparse
import os
import sys
import time

from .errors import UserError

_TRUE = {"true", "t", "yes", "y", "on", "1"}
_FALSE = {"false", "f", "no", "n", "off", "0"}


def str2bool(text):
    """Parse a boolean flag value the way distutils' strtobool did (removed in 3.12)."""
    value = str(text).strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise argparse.ArgumentTypeError(f"expected True or False, got {text!r}")


class ArgumentParser(argparse.ArgumentParser):
    """argparse, but a bad flag is one line on stderr (not the whole usage) and exit code 2."""

    def error(self, message):
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")


def add_arguments(argname, type, default, help, argparser, **kwargs):
    """Add `--argname` to argparser; bool flags accept True/False/true/false/1/0."""
    type = str2bool if type is bool else type
    argparser.add_argument("--" + argname, default=default, type=type,
                           help=help + " Default: %(default)s.", **kwargs)


def print_arguments(args):
    """Print the configuration block the original scripts started their logs with
    (flags only: attributes starting with `_` are bookkeeping, not flags)."""
    print("-----------  Configuration Arguments -----------")
    for arg, value in sorted(vars(args).items()):
        if not arg.startswith("_"):
            print("%s: %s" % (arg, value))
    print("------------------------------------------------")
    sys.stdout.flush()


def fmt_time():
    """Current local time as `%Y-%m-%d %H:%M:%S`, the prefix of every log line."""
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime())


def run_cli(main):
    """Run a script's main(); turn a UserError into one line on stderr and an exit code."""
    try:
        main()
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(err.exit_code)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    except BrokenPipeError:
        # the reader of our output went away (`infer.py ... | head`): stop quietly, as
        # SIGPIPE would, without Python's traceback or a second error at exit
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(141)
