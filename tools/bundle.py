"""Build the hand-in: <netid>.zip holding exactly theory.pdf and a self-contained VI.py.

The course accepts only those two files, so the repository's VI.py, which imports gmm_em, kde,
ebm, tools and theory, would not run alone. The bundled VI.py carries those modules verbatim
and registers them as modules before VI.py's own code, unchanged, imports them: the same code,
hence the same results for the same seed.

    python tools/bundle.py --netid ab1234            # writes ab1234.zip (needs theory/theory.pdf)
    python tools/bundle.py --netid ab1234 --check    # only validate the netid
    python tools/bundle.py --vi-only OUT.py          # only write the self-contained VI.py

The bundled VI.py is, in order: VI.py's docstring; a table of where each problem is answered
(from that docstring) and which embedded module holds it; the loader and the EARLY modules
(tools.pins loads no numerics); the rest of VI.py's opening (the version check and
pin_numerics, which must run before numpy and torch load); the other embedded modules; then
VI.py from its first `import argparse` on.
"""

import argparse
import ast
import re
import sys
import textwrap
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# (module name, path in the repository), in an order where each imports only earlier ones; a
# package (theory) before its submodules.
MODULES = (
    ("gmm_em", "gmm_em.py"),
    ("kde", "kde.py"),
    ("ebm", "ebm.py"),
    ("tools.cli", "tools/cli.py"),
    ("tools.limits", "tools/limits.py"),
    ("tools.outputs", "tools/outputs.py"),
    ("tools.processes", "tools/processes.py"),
    ("theory", "theory/__init__.py"),
    ("theory.macros", "theory/macros.py"),
    ("theory.figures", "theory/figures.py"),
)
# installed before VI.py's opening, which imports pin_numerics from them (they load no numerics)
EARLY = (("tools", "tools/__init__.py"), ("tools.pins", "tools/pins.py"))
SPLIT = "import argparse"  # VI.py's first line after its opening: the modules go before it
WHERE = "Where each problem is answered"  # the docstring paragraph the table is read from
VI_CODE = "# ---- VI.py ----"  # the marker before VI.py's own code in the bundle
LOADER = '''
# ---- Self-contained build for hand-in (tools/bundle.py): the repository's modules are folded
# ---- in below, verbatim, and registered in sys.modules before VI.py imports them.
import linecache as _linecache
import sys as _sys
import types as _types


def _install(name, path, source):
    """Run source as the module name, as importing the file path would."""
    filename = f"<bundled {path}>"
    module = _types.ModuleType(name)
    if path.endswith("__init__.py"):
        module.__path__ = []  # a package; its submodules are the ones installed here
    module.__package__ = name if path.endswith("__init__.py") else name.rpartition(".")[0]
    # tracebacks and inspect read source lines through linecache: give them the embedded text
    _linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
    _sys.modules[name] = module  # before exec: dataclasses look their module up there
    exec(compile(source, filename, "exec"), module.__dict__)
    parent, _, child = name.rpartition(".")
    if parent:
        setattr(_sys.modules[parent], child, module)  # so that `from parent import child` works

'''


def read(path):
    return (ROOT / path).read_text(encoding="utf-8")


def raw_literal(source, path):
    """source as a raw triple-quoted literal, checked to read back as exactly source."""
    literal = f"r'''{source}'''"
    try:
        same = "'''" not in source and ast.literal_eval(literal) == source
    except SyntaxError:
        same = False
    if not same:
        raise ValueError(
            f"{path} cannot be embedded verbatim as r'''...''' (it contains ''' "
            "or ends in a backslash or a quote)"
        )
    return literal


def answer_table(docstring):
    """Comment lines: the rows of the docstring paragraph that starts with WHERE, each with the
    module of the bundle that holds its names; then the embedded modules that no row names."""
    paragraph = next((p for p in docstring.split("\n\n") if p.startswith(WHERE)), None)
    if paragraph is None:
        raise ValueError(f"VI.py's docstring has no paragraph that starts {WHERE!r}")
    text = " ".join(paragraph.split()).partition(":")[2]
    row = re.compile(r"(\d+\.\d+(?:-\d+\.\d+)?) (this file|[\w/]+\.py) \(([^()]*)\)")
    rows = list(row.finditer(text))
    gaps = [text[a.end() : b.start()] for a, b in zip(rows, rows[1:])]
    if not rows or text[: rows[0].start()].strip() or any(g.strip() != ";" for g in gaps):
        raise ValueError(f"cannot read the table of VI.py's paragraph {WHERE!r}: {text!r}")
    module_of = {path: name for name, path in EARLY + MODULES}
    width = max(len(m.group(2)) for m in rows)
    lines = [f"# {WHERE} (read from VI.py's docstring), and where in this one file:"]
    for m in rows:
        problems, path, names = m.groups()
        if path == "this file":
            where = f'VI.py\'s own code, after "{VI_CODE}"'
        elif path in module_of:
            where = f"embedded module {module_of[path]}"
        else:
            raise ValueError(f"VI.py's docstring names {path}, which the bundle does not carry")
        lines += textwrap.wrap(
            f"{problems:<8} {path:<{width}} -> {where}: {names}",
            96,
            initial_indent="#   ",
            subsequent_indent="#" + " " * 15,
        )
    lines += textwrap.wrap(
        "Also embedded: "
        + ", ".join(
            f"{path} as module {name}"
            for name, path in EARLY + MODULES
            if path not in {m.group(2) for m in rows}
        )
        + ". Each module is embedded below, verbatim, as _install(name, path, source).",
        96,
        initial_indent="# ",
        subsequent_indent="# ",
    )
    return "".join(line + "\n" for line in lines) + "\n"


def split_opening(vi):
    """VI.py's lines: (docstring, rest of the opening, the code from SPLIT on), after checking
    that the opening calls pin_numerics under __main__ and imports no numerical library."""
    lines = vi.splitlines(keepends=True)
    split = next((i for i, line in enumerate(lines) if line.startswith(SPLIT)), None)
    if split is None:
        raise ValueError(f"VI.py has no line that starts {SPLIT!r}")
    opening = ast.parse("".join(lines[:split]))
    first = opening.body[0] if opening.body else None
    if not (
        isinstance(first, ast.Expr)
        and isinstance(first.value, ast.Constant)
        and isinstance(first.value.value, str)
    ):
        raise ValueError("VI.py does not open with a docstring")
    pins = any(
        isinstance(node, ast.If)
        and "__main__" in ast.unparse(node.test)
        and "pin_numerics(" in ast.unparse(node)
        for node in opening.body
    )
    imported = set()
    for node in ast.walk(opening):
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            imported.add((node.module or "").split(".")[0])
    early = imported & ({"numpy", "torch", "scipy", "matplotlib"} | {n for n, _ in MODULES})
    early -= {n for n, _ in EARLY}
    if not pins or early:
        raise ValueError(
            f"VI.py's opening, before {SPLIT!r}, must call pin_numerics under "
            f"__main__ and import no numerical library (imports: {sorted(early)})"
        )
    doc_end = first.end_lineno
    return "".join(lines[:doc_end]), "".join(lines[doc_end:split]), "".join(lines[split:])


def bundled_vi():
    """The text of the self-contained VI.py (see the module's docstring for its layout)."""
    vi = read("VI.py")
    docstring, opening, code = split_opening(vi)
    def install(name, path):
        return f"_install({name!r}, {path!r}, {raw_literal(read(path), path)})\n\n"

    parts = [docstring, "\n", answer_table(ast.get_docstring(ast.parse(vi))), LOADER]
    parts += [install(*m) for m in EARLY] + [opening, "\n"] + [install(*m) for m in MODULES]
    parts.append(f"{VI_CODE}\n{code}")
    return "".join(parts)


def check_netid(netid):
    if not netid or not re.fullmatch(r"[A-Za-z0-9]+", netid):
        raise ValueError(
            f"a netid of letters and digits is needed, e.g. NETID=ab1234 (got {netid!r})"
        )


def atomic_write(path, write):
    """The run's write-then-rename (tools/outputs.py), imported only when something is written."""
    sys.path.insert(0, str(ROOT))
    from tools.outputs import atomic_write as write_then_rename

    write_then_rename(str(path), write)


def write_text(tmp, text):
    with open(tmp, "w", encoding="utf-8", newline="\n") as f:
        f.write(text)


def write_zip(netid, pdf, out_dir):
    path = Path(out_dir) / f"{netid}.zip"
    vi = bundled_vi().encode("utf-8")  # before the zip is opened: a refusal writes nothing

    def write(tmp):
        with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as z:
            z.write(pdf, "theory.pdf")
            z.writestr("VI.py", vi)

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
            text = bundled_vi()
            atomic_write(Path(args.vi_only).resolve(), lambda tmp: write_text(tmp, text))
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
