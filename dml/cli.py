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


class GivenFlag(argparse.Action):
    """Stores the flag's value like argparse's default action and notes that it was
    given (`given(args, dest)`), so a default can be told apart from the same value
    typed on the command line."""

    def __call__(self, parser, namespace, values, option_string=None):
        setattr(namespace, self.dest, values)
        if not isinstance(getattr(namespace, GIVEN, None), set):
            setattr(namespace, GIVEN, set())
        getattr(namespace, GIVEN).add(self.dest)


#: The Namespace attribute holding the names of the flags typed on the command line.
GIVEN = "_given"
#: The Namespace attribute holding {flag: where its value came from} for the configuration block.
SOURCES = "_sources"


def given(args, dest):
    """True when flag `dest` (declared by add_arguments) was on the command line."""
    return dest in getattr(args, GIVEN, ())


def set_from(args, dest, value, source):
    """Set flag `dest` to `value` taken from elsewhere than the command line; the
    configuration block shows `dest: value (source)`."""
    setattr(args, dest, value)
    note(args, dest, source)


def note(args, dest, text):
    """A remark the configuration block prints after flag `dest`'s value."""
    if not isinstance(getattr(args, SOURCES, None), dict):
        setattr(args, SOURCES, {})
    getattr(args, SOURCES)[dest] = text


def sources(args):
    """{flag: remark} of the flags set_from or note marked."""
    return getattr(args, SOURCES, None) or {}


def flag_values(args):
    """{flag: value} of a parsed Namespace, without the bookkeeping attributes."""
    return {name: value for name, value in vars(args).items() if not name.startswith("_")}


def add_arguments(argname, type, default, help, argparser, **kwargs):
    """Add `--argname` to argparser; bool flags accept True/False/true/false/1/0.
    Whether the flag was typed is kept (`given`)."""
    type = str2bool if type is bool else type
    shown = " Default: . (the current directory)." if default == "." else " Default: %(default)s."
    argparser.add_argument("--" + argname, default=default, type=type, action=kwargs.pop("action", GivenFlag),
                           help=help + shown, **kwargs)


def print_arguments(args):
    """Print the configuration block the original scripts started their logs with
    (flags only: attributes starting with `_` are bookkeeping, not flags)."""
    print("-----------  Configuration Arguments -----------")
    remarks = sources(args)
    for arg, value in sorted(flag_values(args).items()):
        print("%s: %s" % (arg, value) + (f" ({remarks[arg]})" if arg in remarks else ""))
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
