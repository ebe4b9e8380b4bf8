"""Build the hand-in: <netid>.zip holding exactly theory.pdf and a self-contained VI.py.

The course accepts only those two files, so the repository's VI.py, which imports gmm_em, kde
and ebm, would not run alone. The bundled VI.py carries the three modules verbatim and
registers them as modules before VI.py's own code, unchanged, imports them: the same code,
hence the same results for the same seed.

    python tools/bundle.py --netid ab1234            # writes ab1234.zip (needs theory/theory.pdf)
    python tools/bundle.py --netid ab1234 --check    # only validate the netid
    python tools/bundle.py --vi-only OUT.py          # only write the self-contained VI.py
"""

import argparse
import re
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MODULES = ("gmm_em", "kde", "ebm")  # in an order where each imports only earlier ones
LOADER = """
# ---- Self-contained build for hand-in: the repository's modules gmm_em, kde and ebm are
# ---- folded in below, verbatim, and registered in sys.modules before VI.py imports them.
import sys as _sys
import types as _types


def _install(name, source):
    module = _types.ModuleType(name)
    _sys.modules[name] = module  # before exec: dataclasses look their module up there
    exec(compile(source, f"<bundled {name}.py>", "exec"), module.__dict__)

"""


def bundled_vi():
    """The text of the self-contained VI.py: VI.py's opening (its docstring and the thread
    setting that must precede numpy), the three modules, then the rest of VI.py."""
    vi = (ROOT / "VI.py").read_text()
    lines = vi.splitlines(keepends=True)
    first_import = next(i for i, line in enumerate(lines) if line.startswith("import argparse"))
    parts = ["".join(lines[:first_import]), LOADER]
    for name in MODULES:
        source = (ROOT / f"{name}.py").read_text()
        if "'''" in source:
            raise ValueError(f"{name}.py contains ''' and cannot be embedded as a raw string")
        parts.append(f"_install({name!r}, r'''{source}''')\n\n")
    parts.append("# ---- VI.py ----\n" + "".join(lines[first_import:]))
    return "".join(parts)


def check_netid(netid):
    if not netid or not re.fullmatch(r"[A-Za-z0-9]+", netid):
        raise ValueError(
            f"a netid of letters and digits is needed, e.g. NETID=ab1234 (got {netid!r})"
        )


def atomic_write(path, write):
    """VI.py's write-then-rename, imported only when something is written: importing VI loads
    torch, seconds that a refused netid should not wait for."""
    sys.path.insert(0, str(ROOT))
    from VI import atomic_write as write_then_rename

    write_then_rename(str(path), write)


def write_zip(netid, pdf, out_dir):
    path = Path(out_dir) / f"{netid}.zip"

    def write(tmp):
        with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as z:
            z.write(pdf, "theory.pdf")
            z.writestr("VI.py", bundled_vi())

    atomic_write(path, write)
    return path


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--netid", default=None)
    p.add_argument("--check", action="store_true", help="only validate the netid")
    p.add_argument("--vi-only", metavar="PATH", help="write only the self-contained VI.py to PATH")
    p.add_argument("--pdf", default=str(ROOT / "theory" / "theory.pdf"))
    p.add_argument("--out-dir", default=str(ROOT))
    args = p.parse_args(argv)
    try:
        if args.vi_only:
            atomic_write(
                Path(args.vi_only).resolve(), lambda tmp: Path(tmp).write_text(bundled_vi())
            )
            return 0
        check_netid(args.netid)
        if args.check:
            return 0
        if not Path(args.pdf).is_file():
            raise ValueError(f"{args.pdf} is missing; build it with `make pdf`")
        print(f"wrote {write_zip(args.netid, args.pdf, args.out_dir)}")
        return 0
    except (ValueError, OSError) as e:
        print(f"bundle.py: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
