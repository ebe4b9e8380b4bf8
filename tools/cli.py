"""A frozen dataclass of settings as a command line: every field an option named after it, its
values checked before any work, and every refusal one line with exit status 2."""

import argparse
import contextlib
import math
import os
import sys
import time
from dataclasses import fields


def option(name):
    return "--" + name.replace("_", "-")


def check(cfg, at_least, any_value, relations):
    """Raise ValueError, naming the option, if cfg cannot be run: every value finite, every list
    non-empty, every value positive (or at least at_least[name]) unless its name is in any_value,
    and every (test, message) of relations true."""
    for f in fields(cfg):
        value = getattr(cfg, f.name)
        values = value if isinstance(value, tuple) else (value,)
        shown, least = ",".join(map(str, values)), at_least.get(f.name)
        if not values or not all(math.isfinite(v) for v in values):
            raise ValueError(f"{option(f.name)} must be finite and given (got {shown!r})")
        if f.name in any_value:
            continue
        if least is not None and min(values) < least:
            raise ValueError(f"{option(f.name)} must be at least {least} (got {shown!r})")
        if least is None and min(values) <= 0:
            raise ValueError(f"{option(f.name)} must be positive (got {shown!r})")
    for test, words in relations:
        if not test(cfg):
            raise ValueError(words)


class OneLineParser(argparse.ArgumentParser):
    def error(self, message):  # one line and exit 2, like every other refusal here
        self.exit(2, f"VI.py: error: {message}\n")


def list_of(kind):
    def parse(text):
        try:
            return tuple(kind(v) for v in text.split(",") if v.strip())
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected comma-separated {kind.__name__} values, "
                                             f"got {text!r}") from None
    parse.__name__ = f"list of {kind.__name__}"
    return parse


def negative_values_joined(argv):
    """--kl-q -6,0.6 as --kl-q=-6,0.6: argparse takes a value that starts with a minus sign
    for an option of its own."""
    out = list(argv)
    for i in range(len(out) - 1, 0, -1):
        if out[i - 1].startswith("--") and "=" not in out[i - 1] and out[i][:1] == "-" \
                and out[i][1:2] in set("0123456789.") | {"i", "n"}:
            out[i - 1:i + 1] = [f"{out[i - 1]}={out[i]}"]
    return out


def add_fields(parser, cls):
    """One option per field of the dataclass cls, its help the field's metadata["doc"]; a tuple
    field takes comma-separated values of its first element's type."""
    for f in fields(cls):
        listed = isinstance(f.default, tuple)
        shown = ",".join(map(str, f.default)) if listed else f.default
        kind = list_of(type(f.default[0])) if listed else type(f.default)
        parser.add_argument(option(f.name), type=kind,
                            help=f"{f.metadata['doc']} (default {shown})")


def given_fields(args, cls):
    """{field: value} of the options of cls that the command line gave."""
    return {f.name: v for f in fields(cls) if (v := getattr(args, f.name)) is not None}


# ---- the run's lines: progress, and one line for what failed ----------------------------------

class PartFailed(Exception):
    """An error inside one part of the run, named in its message."""


@contextlib.contextmanager
def clock(seconds, name, say):
    """Time the block into seconds[name] and say when it is done; an error in it names it."""
    t = time.perf_counter()
    try:
        yield
    except (PartFailed, KeyboardInterrupt):
        raise
    except Exception as e:
        raise PartFailed(f"{name} failed: {type(e).__name__}: {e}") from e
    seconds[name] = time.perf_counter() - t
    say(f"{name}: done in {seconds[name]:.1f} s")


def say(text):
    """Print a line now; if nobody reads any more (python VI.py | head -1), work on quietly."""
    try:
        print(text, flush=True)
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


def timed_parts(parts, pmap, seconds, say):
    """{name: parts[name]()} computed by pmap(f, names) (a worker per part), each part timed into
    seconds[name] and named in its error (clock)."""
    def timed(name):
        took = {}
        with clock(took, name, say):
            value = parts[name]()
        return value, took[name]
    done = dict(zip(parts, pmap(timed, list(parts))))
    seconds.update({name: took for name, (_, took) in done.items()})
    return {name: value for name, (value, _) in done.items()}
