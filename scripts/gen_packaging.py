#!/usr/bin/env python3
"""Write guardian's man pages and shell completion, each from its one source.

  packaging/man/guardian.8            the argument parser (guardian.cli.build_parser), README's
                                      "Exit codes" table and the prose of packaging/man/guardian.8.in
  packaging/man/guardian.toml.5       the comments of the shipped policy (guardian/default_policy.toml)
                                      and packaging/man/guardian.toml.5.in
  packaging/completion/guardian.bash  bash completion, from the parser
  packaging/completion/_guardian      zsh completion, from the parser

Run it after changing a source: ``.venv/bin/python scripts/gen_packaging.py``. With ``--check``
it writes nothing and exits 1 when a committed file differs from what it would write;
tests/test_manpages.py and tests/test_completion.py fail the same way, so a new option or a
changed policy comment cannot reach main without its man page and completion.

A script, not a module of the package: the daemon never runs it, and an installed guardian
needs only its output (packaging/ ships the generated files). It writes roff and shell itself,
with the standard library alone: help2man would only see ``--help`` text (no per-command pages,
no completion), and pandoc (a large dependency) would still need the policy's comments turned
into its input first.

The policy's comments follow a few conventions, which this script relies on and checks (it stops
with the line number where one is broken):

* ``# --- title ---`` at the start of a block (after an empty line) starts a man section;
* ``[table]`` starts a subsection; ``[[table]]`` lines and their keys are shown as examples;
* a comment paragraph directly above a key documents the key (every key of a plain table needs
  one, unless its table's header follows a comment: [scorers]); directly above a commented-out
  key (``# directory = ...``) in a plain table, it documents that optional key;
* a paragraph whose first line is indented, or holds a gap of two or more spaces, is a table laid
  out in columns: two columns become a list of terms, more become a table;
* commented-out TOML (``# [[cgroup]]``, ``# match = ...``, with one space after the ``#``) is an
  example, shown without the ``#``;
* `backticks` mark literal text (shown in bold).
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from guardian import __version__, cli  # noqa: E402  (the checkout's guardian, not an installed one)

POLICY = ROOT / "guardian" / "default_policy.toml"
README = ROOT / "README.md"
MAN = ROOT / "packaging" / "man"
COMPLETION = ROOT / "packaging" / "completion"
THIS = "scripts/gen_packaging.py"


class SourceError(Exception):
    """A source this script cannot turn into a page: where, and what to change."""


# --- roff --------------------------------------------------------------------------------------


def escape(text: str) -> str:
    """Plain text as roff text: backslashes and dashes literal (``\\-``, so that an option copied
    from the page is still an option), anything beyond ASCII as a groff Unicode escape."""
    text = text.replace("\\", "\\e").replace("-", "\\-")
    return "".join(c if ord(c) < 128 else f"\\[u{ord(c):04X}]" for c in text)


def inline(text: str) -> str:
    """Text with `literal` spans, as roff: the spans in bold."""
    parts = text.split("`")
    if len(parts) % 2 == 0:
        raise SourceError(f"unbalanced backtick in {text!r}")
    return "".join(escape(p) if i % 2 == 0 else rf"\fB{escape(p)}\fR" for i, p in enumerate(parts))


def bold(text: str) -> str:
    return rf"\fB{escape(text)}\fR"


def italic(text: str) -> str:
    return rf"\fI{escape(text)}\fR"


def text_line(line: str) -> str:
    """One line of running text: a leading dot or quote would be read as a request."""
    return "\\&" + line if line.startswith((".", "'")) else line


def paragraph(lines: Sequence[str]) -> list[str]:
    """The lines of one paragraph as roff lines, one for one (roff fills them); a `literal` span
    may run on to the next line."""
    text = inline("\n".join(" ".join(line.split()) for line in lines))
    return [text_line(line) for line in text.split("\n")]


def example(lines: Sequence[str]) -> list[str]:
    """Lines shown verbatim, in a monospaced block."""
    return [".PP", ".EX", *(text_line(escape(line)) for line in lines), ".EE"]


TBL = "'\\\" t\n"  # the first line of a page that has tables: man-db and mandoc run tbl for it


def fill(template: Path, sources: str, values: dict[str, str]) -> str:
    """The template with each ``@NAME@`` replaced. Its leading comment lines (about the template
    itself) are dropped; a header says where the page comes from instead."""
    lines = template.read_text("utf-8").splitlines()
    while lines and lines[0].startswith('.\\"'):
        lines.pop(0)
    text = "\n".join(lines) + "\n"
    used = set(re.findall(r"@([A-Z_]+)@", text))
    if used != set(values):
        raise SourceError(f"{template.name}: placeholders {sorted(used)}, expected {sorted(values)}")
    for name, value in values.items():
        text = text.replace(f"@{name}@", value)
    header = f'.\\" Generated by {THIS} from {template.relative_to(ROOT)} and {sources}.\n'
    header += '.\\" Do not edit: change a source and run the script again.\n'
    # tbl runs only where the first line asks for it (man-db, mandoc)
    return (TBL if "\n.TS\n" in text else "") + header + text


# --- the argument parser -------------------------------------------------------------------------

# How each kind of option value is completed, by its metavar. A new metavar stops this script
# until someone says here how to complete it.
VALUE_KINDS = {"FILE": "file", "DIR": "directory", "SECONDS": "", "N": "", "CGROUP": "", "BYTES": ""}


@dataclass(frozen=True)
class Option:
    names: tuple[str, ...]
    help: str
    metavar: Optional[str] = None  # None: a flag, no value
    choices: tuple[str, ...] = ()
    default: Optional[str] = None  # as it would be typed; None: no default worth saying

    @property
    def takes_value(self) -> bool:
        return self.metavar is not None or bool(self.choices)

    @property
    def value_kind(self) -> str:
        """How its value is completed: file, directory, choices, or "" (typed, nothing to offer)."""
        if self.choices:
            return "choices"
        return VALUE_KINDS[self.metavar] if self.metavar else ""


@dataclass(frozen=True)
class Command:
    name: str
    summary: str  # the one line of ``guardian --help``
    description: str
    options: tuple[Option, ...]
    operands: tuple[Option, ...] = ()  # positional arguments, in order (names empty)


@dataclass(frozen=True)
class Interface:
    prog: str
    description: str
    options: tuple[Option, ...]  # before the command
    commands: tuple[Command, ...]


def _default_text(action: argparse.Action) -> Optional[str]:
    value = action.default
    if value is None or value is argparse.SUPPRESS or isinstance(value, bool):
        return None
    return f"{value:g}" if isinstance(value, float) else str(value)


def operand_of(action: argparse.Action, where: str) -> Option:
    """A positional argument: one value (no nargs), completed by its metavar's kind."""
    if action.nargs is not None or action.choices:
        raise SourceError(f"{where} {action.dest}: only a positional argument of one value is supported")
    metavar = str(action.metavar or action.dest.upper())
    if metavar not in VALUE_KINDS:
        raise SourceError(f"{where} {action.dest} is {metavar}: say in VALUE_KINDS how to complete it")
    return Option((), action.help or "", metavar)


def option_of(action: argparse.Action, where: str) -> Option:
    name = "/".join(action.option_strings)
    if not action.option_strings:
        raise SourceError(f"{where} {action.dest}: a positional argument before the command is not supported")
    if action.nargs not in (None, 0):
        raise SourceError(f"{where} {name}: nargs={action.nargs!r} is not supported here yet")
    # argparse's own expansion of %(default)s and the like (HelpFormatter._expand_help)
    params = {k: v for k, v in vars(action).items() if v is not argparse.SUPPRESS}
    help_text = (action.help or "") % {**params, "prog": where}
    default = _default_text(action)
    said = re.search(r"\bdefault (\S+?)[;),]", help_text)
    if said and default is not None and said.group(1) != default:
        raise SourceError(f"{where} {name}: the help says default {said.group(1)}, the parser {default}")
    choices = tuple(str(c) for c in action.choices) if action.choices else ()
    metavar = None
    if action.nargs != 0 and not choices:
        metavar = str(action.metavar or action.dest.upper())
        if metavar not in VALUE_KINDS:
            raise SourceError(f"{where} {name} takes {metavar}: say in VALUE_KINDS how to complete it")
    return Option(tuple(action.option_strings), help_text, metavar, choices, default)


def interface(parser: argparse.ArgumentParser) -> Interface:
    """What build_parser() says, in a form the writers below can use. argparse keeps its
    subcommands in ``_SubParsersAction`` (stable since Python 3.2, typed in typeshed)."""
    options: list[Option] = []
    commands: list[Command] = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            summaries = {a.dest: a.help or "" for a in action._choices_actions}
            for name, sub in action.choices.items():
                where = f"{parser.prog} {name}"
                actions = [a for a in sub._actions if not isinstance(a, argparse._HelpAction)]
                sub_options = tuple(option_of(a, where) for a in actions if a.option_strings)
                operands = tuple(operand_of(a, where) for a in actions if not a.option_strings)
                commands.append(Command(name, summaries[name], sub.description or "", sub_options, operands))
        else:
            options.append(option_of(action, parser.prog))
    return Interface(parser.prog, parser.description or "", tuple(options), tuple(commands))


# --- guardian(8) ----------------------------------------------------------------------------------


def option_term(option: Option) -> str:
    names = ", ".join(bold(n) for n in option.names)
    if option.choices:
        return names + " " + "|".join(bold(c) for c in option.choices)
    return names + (" " + italic(option.metavar) if option.metavar else "")


def option_entry(option: Option) -> list[str]:
    help_text = option.help
    if option.default is not None and "default" not in help_text:
        help_text += f"; default {option.default}"
    return [".TP", option_term(option), *paragraph([help_text])]


def synopsis_item(option: Option) -> str:
    name = escape(option.names[-1])
    if option.choices:
        return f".OP {name} {escape('|'.join(option.choices))}"
    return f".OP {name} {escape(option.metavar)}" if option.metavar else f".OP {name}"


def synopsis(face: Interface) -> str:
    lines = [
        ".SY " + face.prog,
        *(synopsis_item(o) for o in face.options),
        ".I COMMAND",
        ".RI [ OPTIONS ]",
        ".YS",
    ]
    for command in face.commands:
        lines += [
            ".SY " + face.prog,
            ".B " + command.name,
            *(synopsis_item(o) for o in command.options),
            *(".I " + escape(str(operand.metavar)) for operand in command.operands),
            ".YS",
        ]
    return "\n".join(lines)


def commands_section(face: Interface) -> str:
    lines: list[str] = []
    for command in face.commands:
        lines += [".SS " + escape(command.name), *paragraph([command.description])]
        for operand in command.operands:
            lines += [".TP", italic(str(operand.metavar)), *paragraph([operand.help])]
        for option in command.options:
            lines += option_entry(option)
    return "\n".join(lines)


def exit_codes(readme: str) -> list[tuple[str, str]]:
    """README's "Exit codes" table: (code, meaning) per row."""
    section = re.search(r"^## Exit codes\n(.*?)(?=^## )", readme, flags=re.MULTILINE | re.DOTALL)
    if section is None:
        raise SourceError("README.md: no '## Exit codes' section")
    rows = re.findall(r"^\| (\d+) \| (.*) \|$", section.group(1), flags=re.MULTILINE)
    used = sorted(str(getattr(cli, n)) for n in dir(cli) if n.startswith("EXIT_"))
    if sorted(code for code, _ in rows) != used:
        raise SourceError(f"README.md, Exit codes: codes {[c for c, _ in rows]}, guardian/cli.py uses {used}")
    return rows


def guardian_8(face: Interface) -> str:
    exit_status = [
        line
        for code, meaning in exit_codes(README.read_text("utf-8"))
        for line in (".TP", bold(code), *paragraph([meaning]))
    ]
    return fill(
        MAN / "guardian.8.in",
        "guardian/cli.py (build_parser) and README.md (Exit codes)",
        {
            "VERSION": escape(__version__),
            "SYNOPSIS": synopsis(face),
            "DESCRIPTION": "\n".join(paragraph([face.description])),
            "OPTIONS": "\n".join(line for o in face.options for line in option_entry(o)),
            "COMMANDS": commands_section(face),
            "EXIT_STATUS": "\n".join(exit_status),
        },
    )


# --- guardian.toml(5) ------------------------------------------------------------------------------

BANNER = re.compile(r"^--- (.+?) -+$")
HEADER = re.compile(r"^\[(\[?)([a-z_.]+)\]\]?$")
KEY = re.compile(r"^([a-z_]+) = (\S.*)$")


@dataclass(frozen=True)
class Line:
    number: int
    kind: str  # blank, break (a bare "#"), banner, prose, example (commented-out TOML), header, key
    text: str  # a comment's text after "# "; a TOML line as it is


def classify(number: int, raw: str) -> Line:
    if not raw.strip():
        return Line(number, "blank", "")
    if raw.startswith("#"):
        text = raw[2:] if raw.startswith("# ") else raw[1:]
        if not text.strip():
            return Line(number, "break", "")
        if BANNER.match(text):
            return Line(number, "banner", text)
        if HEADER.match(text) or KEY.match(text):
            return Line(number, "example", text)
        return Line(number, "prose", text)
    if HEADER.match(raw) or KEY.match(raw):
        return Line(number, "header" if raw.startswith("[") else "key", raw)
    raise SourceError(f"line {number}: neither a comment, a [table] nor a one-line key = value: {raw!r}")


def runs(lines: Sequence[Line]) -> list[tuple[str, list[Line]]]:
    """Consecutive lines of one sort: prose (a paragraph), example, toml (headers and keys),
    break. A break (a bare "#") stands alone: it separates paragraphs."""
    out: list[tuple[str, list[Line]]] = []
    for line in lines:
        sort = "toml" if line.kind in ("header", "key") else line.kind
        if out and out[-1][0] == sort and sort != "break":
            out[-1][1].append(line)
        else:
            out.append((sort, [line]))
    return out


def indentation(text: str) -> int:
    return len(text) - len(text.lstrip(" "))


def columns(lines: Sequence[Line]) -> list[list[str]]:
    """A paragraph laid out in columns, as rows of cells. A column starts where some row has text
    after a gap of two or more spaces and no line has a word across that place; a line indented
    deeper than the rows continues the row above; a row without a gap is a term alone (its
    description is on the lines below)."""
    texts = [line.text for line in lines]
    indent = min(indentation(t) for t in texts)

    def alone(t: str) -> bool:
        return indentation(t) == indent and not re.search(r"\S {2,}\S", t)

    starts = sorted(
        {m.start(2) for t in texts if indentation(t) == indent for m in re.finditer(r"(\S) {2,}(\S)", t)}
    )
    bounds: list[int] = []
    for p in starts:
        if all(len(t) <= p or t[p - 1] == " " or t[p] == " " for t in texts if not alone(t)):
            bounds.append(p)
    if not bounds:
        raise SourceError(f"line {lines[0].number}: a paragraph laid out in columns, but no column lines up")
    cuts: list[Optional[int]] = [0, *bounds, None]
    rows: list[list[str]] = []
    for line, t in zip(lines, texts):
        if alone(t):
            cells = [t.strip()] + [""] * len(bounds)
        else:
            cells = [" ".join(t[a:b].split()) for a, b in zip(cuts, cuts[1:])]
        if indentation(t) == indent and cells[0]:
            rows.append(cells)
        elif rows:
            rows[-1] = [f"{old} {new}".strip() for old, new in zip(rows[-1], cells)]
        else:
            raise SourceError(f"line {line.number}: a continuation line before the first row")
    return rows


def is_columns(lines: Sequence[Line]) -> bool:
    first = lines[0].text
    return indentation(first) > 0 or bool(re.search(r"\S {2,}\S", first))


def term(text: str) -> str:
    return bold(text.replace("`", ""))


def render_paragraph(lines: Sequence[Line]) -> list[str]:
    if not is_columns(lines):
        return [".PP", *paragraph([line.text for line in lines])]
    rows = columns(lines)
    if len(rows[0]) == 2:
        return [line for t, description in rows for line in (".TP", term(t), *paragraph([description]))]
    # three or more columns: a table (tbl), its text wrapped in each cell, left-adjusted
    spec = " ".join(["lB", *["lx"] * (len(rows[0]) - 1)]) + "."
    out = [".PP", ".ad l", ".TS", spec]
    for first, *rest in rows:
        cells = [escape(first.replace("`", ""))]
        cells += ["T{\n" + "\n".join(paragraph([cell])) + "\nT}" for cell in rest]
        out.append("\t".join(cells))
    return [*out, ".TE", ".ad"]


def key_term(text: str, commented: bool = False) -> str:
    m = KEY.match(text)
    assert m is not None
    return ("# " if commented else "") + f"{bold(m.group(1))} = {escape(m.group(2))}"


def entry(terms: Sequence[str], body: Sequence[Line]) -> list[str]:
    if is_columns(body):
        raise SourceError(f"line {body[0].number}: a key's comment cannot be laid out in columns")
    out = [".TP", terms[0]]
    for more in terms[1:]:
        out += [".TQ", more]
    return out + paragraph([line.text for line in body])


@dataclass
class Context:
    """The table the policy is in, as far as the page cares."""

    array: bool = False  # a [[table]]: its keys are an example, not documented one by one
    documented: bool = False  # a comment stood right above the table's header


def render_chunk(lines: Sequence[Line], where: Context) -> list[str]:
    """One block of the policy (the lines between two empty lines)."""
    out: list[str] = []
    groups = runs(lines)
    i = 0
    while i < len(groups):
        sort, group = groups[i]
        following = groups[i + 1] if i + 1 < len(groups) else ("", [])
        if sort == "prose":
            if following[0] == "toml" and following[1][0].kind == "key":
                if where.array:
                    raise SourceError(f"line {group[0].number}: a comment between a [[table]] and its keys")
                out += entry([key_term(k.text) for k in following[1]], group)
                i += 2
                continue
            one_key = following[0] == "example" and len(following[1]) == 1 and KEY.match(following[1][0].text)
            if one_key and not where.array:
                out += entry([key_term(following[1][0].text, commented=True)], group)
                i += 2
                continue
            out += render_paragraph(group)
        elif sort == "example":
            out += example([line.text for line in group])
        elif sort == "toml":
            first = group[0]
            if first.kind == "key":
                raise SourceError(f"line {first.number}: {first.text!r} has no comment above it")
            m = HEADER.match(first.text)
            assert m is not None
            where.array = bool(m.group(1))
            where.documented = i > 0 and groups[i - 1][0] == "prose"
            if len(group) > 1 and not (where.array or where.documented):
                raise SourceError(f"line {group[1].number}: {group[1].text!r} has no comment above it")
            if where.array or len(group) > 1:
                out += example([line.text for line in group])
        i += 1
    return out


def chunks(lines: Sequence[Line]) -> Iterator[list[Line]]:
    chunk: list[Line] = []
    for line in [*lines, Line(0, "blank", "")]:
        if line.kind != "blank":
            chunk.append(line)
        elif chunk:
            yield chunk
            chunk = []


def guardian_toml_5() -> str:
    lines = [classify(n, raw) for n, raw in enumerate(POLICY.read_text("utf-8").splitlines(), 1)]
    first, *rest = chunks(lines)
    title = re.match(r"^/etc/guardian\.toml: (.+)\.$", first[0].text)
    if first[0].kind != "prose" or title is None:
        raise SourceError("line 1: expected '# /etc/guardian.toml: what the file is.'")
    if any(line.kind not in ("prose", "break") for line in first):
        raise SourceError("the first block (up to the first empty line) is the description: comments only")
    where = Context()
    description = render_chunk(first[1:], where)
    body: list[str] = []
    for block in rest:
        banner = BANNER.match(block[0].text) if block[0].kind == "banner" else None
        chunk = block[1:] if banner is not None else block
        if banner is not None:
            body.append(f'.SH "{escape(banner.group(1).upper())}"')
        elif not body:
            body.append('.SH "TOP-LEVEL KEYS"')
        for line in chunk:
            if line.kind == "banner":
                raise SourceError(f"line {line.number}: a banner must start a block (an empty line above it)")
        tables = [
            m.group(2)
            for line in chunk
            if line.kind == "header" and (m := HEADER.match(line.text)) and not m.group(1)
        ]
        if len(tables) > 1:
            raise SourceError(f"line {chunk[0].number}: one [table] per block, found {tables}")
        body += [f".SS [{escape(name)}]" for name in tables]
        body += render_chunk(chunk, where)
    return fill(
        MAN / "guardian.toml.5.in",
        "the comments of guardian/default_policy.toml",
        {
            "VERSION": escape(__version__),
            "SUMMARY": inline(title.group(1)),
            "DESCRIPTION": "\n".join(description),
            "KEYS": "\n".join(body),
        },
    )


# --- completion -----------------------------------------------------------------------------------

WORD = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$|^--?[A-Za-z0-9][A-Za-z0-9_-]*$")


def words(names: Sequence[str]) -> str:
    """Names for a shell script, checked to need no quoting."""
    for name in names:
        if not WORD.match(name):
            raise SourceError(f"{name!r}: a command, option or choice the completion would have to quote")
    return " ".join(names)


BASH_HEAD = """\
# bash completion for guardian(8)
# Generated by {this} from guardian's argument parser (guardian/cli.py): do not edit.
# Installed as /usr/local/share/bash-completion/completions/guardian, where bash-completion loads
# it on first use; or source it: it needs bash 4 and nothing else.

_guardian_words() {{
    mapfile -t COMPREPLY < <(compgen -W "$1" -- "$2")
}}

_guardian_files() {{
    compopt -o filenames 2>/dev/null
    mapfile -t COMPREPLY < <(compgen -f -- "$1")
}}

_guardian_directories() {{
    compopt -o filenames 2>/dev/null
    mapfile -t COMPREPLY < <(compgen -d -- "$1")
}}

_guardian() {{
    local cur=${{COMP_WORDS[COMP_CWORD]}} prev="" command="" i
    COMPREPLY=()
    if ((COMP_CWORD > 0)); then prev=${{COMP_WORDS[COMP_CWORD - 1]}}; fi
    # --policy=FILE: bash splits the line at "=" (COMP_WORDBREAKS); complete what follows it
    if [[ $cur == "=" ]]; then
        cur=""
    elif [[ $prev == "=" ]] && ((COMP_CWORD > 1)); then
        prev=${{COMP_WORDS[COMP_CWORD - 2]}}
    fi
    for ((i = 1; i < COMP_CWORD; i++)); do
        case ${{COMP_WORDS[i]}} in
        -*) ;;
        *)
            command=${{COMP_WORDS[i]}}
            break
            ;;
        esac
    done
    case $command in
    "")
        if [[ $cur == -* ]]; then
            _guardian_words "{options}" "$cur"
        else
            _guardian_words "{commands}" "$cur"
        fi
        ;;
"""

BASH_VALUE = {
    "": "return 0",  # a value to type: nothing to offer
    "file": '_guardian_files "$cur"; return 0',
    "directory": '_guardian_directories "$cur"; return 0',
}


def bash_completion(face: Interface) -> str:
    if any(o.takes_value for o in face.options):
        raise SourceError(
            "an option before the command that takes a value: the bash completion cannot skip it yet"
        )
    head = BASH_HEAD.format(
        this=THIS,
        options=words([n for o in face.options for n in o.names]),
        commands=words([c.name for c in face.commands]),
    )
    lines = [head.rstrip("\n")]
    for command in face.commands:
        lines.append(f"    {words([command.name])})")
        actions: dict[str, list[str]] = {}  # what to do after an option that takes a value
        for o in command.options:
            if o.value_kind == "choices":
                actions.setdefault(f'_guardian_words "{words(o.choices)}" "$cur"; return 0', []).extend(
                    o.names
                )
            elif o.takes_value:
                actions.setdefault(BASH_VALUE[o.value_kind], []).extend(o.names)
        if actions:
            lines.append("        case $prev in")
            lines += [
                f"        {' | '.join(words(names).split())}) {action} ;;"
                for action, names in actions.items()
            ]
            lines.append("        esac")
        names = [n for o in command.options for n in o.names] + ["-h", "--help"]
        complete_options = f'_guardian_words "{words(names)}" "$cur"'
        kinds = {o.value_kind for o in command.operands}
        if kinds - {"file"}:
            raise SourceError(f"guardian {command.name}: bash completes file operands alone yet")
        if kinds:  # an operand: a word that is not an option is a file name
            lines += [
                "        if [[ $cur == -* ]]; then",
                f"            {complete_options}",
                "        else",
                '            _guardian_files "$cur"',
                "        fi",
                "        ;;",
            ]
        else:
            lines += [f"        {complete_options}", "        ;;"]
    lines += ["    esac", "}", "", f"complete -F _guardian {face.prog}", ""]
    return "\n".join(lines)


def zsh_quote(text: str) -> str:
    return "'" + text.replace("'", "'\\''") + "'"


def zsh_spec(option: Option) -> list[str]:
    """_arguments specs, one per name of the option: the names exclude each other."""
    description = " ".join(option.help.split()).replace("\\", "\\\\").replace("[", "\\[").replace("]", "\\]")
    value = ""
    if option.takes_value:
        if option.value_kind == "choices":
            action = "(" + words(option.choices) + ")"
        else:
            action = {"file": "_files", "directory": "_files -/", "": " "}[option.value_kind]
        message = option.metavar or option.names[-1].lstrip("-")
        value = f":{message}:{action}"
    exclusion = f"({' '.join(option.names)})" if len(option.names) > 1 else ""
    specs = []
    for name in option.names:
        equals = "=" if option.takes_value and name.startswith("--") else ""
        specs.append(zsh_quote(f"{exclusion}{name}{equals}[{description}]{value}"))
    return specs


ZSH_HEAD = """\
#compdef {prog}
# zsh completion for guardian(8)
# Generated by {this} from guardian's argument parser (guardian/cli.py): do not edit.
# Installed as /usr/local/share/zsh/site-functions/_guardian, on zsh's fpath, where compinit
# finds it.

_guardian_commands() {{
    local -a commands=(
{commands}
    )
    _describe -t commands 'guardian command' commands
}}

_guardian() {{
    local curcontext=$curcontext state line ret=1
    local -A opt_args
    _arguments -C \\
{options}
        ': :_guardian_commands' \\
        '*:: :->command' && ret=0
    case $state in
    command)
        curcontext=${{curcontext%:*:*}}:guardian-$words[1]:
        case $words[1] in
"""


def zsh_completion(face: Interface) -> str:
    help_option = Option(("-h", "--help"), "show this help message and exit")
    commands = [
        f"        {zsh_quote(words([c.name]) + ':' + ' '.join(c.summary.split()))}" for c in face.commands
    ]
    head = ZSH_HEAD.format(
        prog=face.prog,
        this=THIS,
        commands="\n".join(commands),
        options="\n".join(f"        {spec} \\" for o in face.options for spec in zsh_spec(o)),
    )
    lines = [head.rstrip("\n")]
    for command in face.commands:
        lines += [f"        {words([command.name])})", "            _arguments \\"]
        for option in (help_option, *command.options):
            lines += [f"                {spec} \\" for spec in zsh_spec(option)]
        for operand in command.operands:
            action = {"file": "_files", "directory": "_files -/", "": " "}[operand.value_kind]
            lines.append(f"                {zsh_quote(f':{operand.metavar}:{action}')} \\")
        lines += ["                && ret=0", "            ;;"]
    lines += ["        esac", "        ;;", "    esac", "    return ret", "}", "", '_guardian "$@"', ""]
    return "\n".join(lines)


# --- main -----------------------------------------------------------------------------------------


def outputs() -> dict[Path, str]:
    """Every generated file and what it should hold."""
    face = interface(cli.build_parser())
    try:
        toml_page = guardian_toml_5()
    except SourceError as exc:
        raise SourceError(f"{POLICY.relative_to(ROOT)}: {exc}") from None
    return {
        MAN / "guardian.8": guardian_8(face),
        MAN / "guardian.toml.5": toml_page,
        COMPLETION / "guardian.bash": bash_completion(face),
        COMPLETION / "_guardian": zsh_completion(face),
    }


def stale(files: dict[Path, str]) -> list[Path]:
    return [path for path, text in files.items() if not path.exists() or path.read_text("utf-8") != text]


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog=THIS, description="Write packaging/man/ and packaging/completion/ from their sources."
    )
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 if a file is out of date")
    args = parser.parse_args(argv)
    try:
        files = outputs()
    except SourceError as exc:
        print(f"{THIS}: {exc}", file=sys.stderr)
        return 1
    for path in stale(files):
        if args.check:
            print(f"{path.relative_to(ROOT)}: out of date; run {THIS}", file=sys.stderr)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(files[path], "utf-8")
            print(f"wrote {path.relative_to(ROOT)}")
    return 1 if args.check and stale(files) else 0


if __name__ == "__main__":
    sys.exit(main())
