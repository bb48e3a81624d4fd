"""Syntax-tree edits of arbitrary matplotlib scripts, registered by name.

Each edit type looks at a parsed script and proposes candidate negatives: an edited copy of the
script (``ast.unparse``), a one-line detail saying what changed and where, and for label swaps and
number changes the textual substitution that the same edit makes in a caption. The candidates are
rendered and filtered by :mod:`data_recipes.external.perturb`.

Registered edits: ``move_point``, ``swap_labels``, ``change_number``, ``remove_element``,
``change_linestyle``.
"""
from __future__ import annotations

import ast
import copy
import re
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from mmgeolm_core.registry import Registry

# Calls that draw something a negative may drop or restyle (attribute or bare names).
DRAW_CALLS = frozenset({
    "plot", "Line2D", "Circle", "Polygon", "fill", "add_patch", "add_line", "add_artist", "Arc",
    "Rectangle", "Ellipse", "RegularPolygon", "Wedge", "arrow", "FancyArrowPatch", "scatter",
    "fill_between", "vlines", "hlines", "axvline", "axhline", "axline",
})
STYLED_CALLS = frozenset({
    "plot", "Line2D", "Circle", "Polygon", "Arc", "Rectangle", "Ellipse", "RegularPolygon", "Wedge",
    "vlines", "hlines", "axvline", "axhline", "axline",
})
TEXT_CALLS = frozenset({"text", "annotate", "figtext"})
# Keyword arguments whose tuples are coordinates (others, e.g. figsize, are not).
COORD_KEYWORDS = frozenset({"xy", "xytext", "center", "xycoords_point", "xyA", "xyB", "posA", "posB"})
# Assigned names that are sizes or styles, never coordinates.
NON_COORD_NAME = re.compile(r"(dpi|size|font|lw|linewidth|width|alpha|zorder|pad|margin|scale|ms|markersize)", re.I)
LABEL_RE = re.compile(r"^\s*(\$?)\\?(?:mathrm\{)?([A-Z])('?)(\}?)(\$?)\s*$")
NUMBER_RE = re.compile(r"(?<![\w.])(\d+(?:\.\d+)?)(?![\d.])")
ANGLE_VALUES = (15, 20, 30, 35, 40, 45, 50, 60, 70, 75, 80, 90, 100, 110, 120, 135, 150)


@dataclass(frozen=True)
class ScriptEdit:
    """One candidate negative script.

    Attributes:
        type: the registered edit name.
        script: the edited source.
        detail: what changed, with the source line.
        caption_swap: for a label swap, the two letters exchanged.
        caption_number: for a number change, (old text, new text) of the number.
    """

    type: str
    script: str
    detail: str
    caption_swap: tuple[str, str] | None = None
    caption_number: tuple[str, str] | None = None


EditFn = Callable[[ast.Module, np.random.Generator], list[ScriptEdit]]
_EDITS: Registry[EditFn] = Registry("script edit")


def register_script_edit(name: str) -> Callable[[EditFn], EditFn]:
    """Register ``fn(tree, rng) -> list[ScriptEdit]`` under ``name`` (a duplicate raises)."""
    return _EDITS.register(name)


def list_script_edits() -> list[str]:
    """Names of the registered script edits, sorted."""
    return _EDITS.names()


def get_script_edit(name: str) -> EditFn:
    """The edit registered under ``name``; an unknown name raises listing the known ones."""
    return _EDITS.get(name)


# --------------------------------------------------------------------------- helpers


def _call_name(node: ast.AST) -> str | None:
    if isinstance(node, ast.Call):
        func = node.func
        if isinstance(func, ast.Attribute):
            return func.attr
        if isinstance(func, ast.Name):
            return func.id
    return None


def _number(node: ast.AST) -> float | None:
    """The value of a numeric literal (``3``, ``-2.5``), else None."""
    if isinstance(node, ast.Constant) and isinstance(node.value, int | float) and not isinstance(node.value, bool):
        return float(node.value)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd):
        inner = _number(node.operand)
        if inner is not None:
            return -inner if isinstance(node.op, ast.USub) else inner
    return None


def _literal(value: float) -> ast.expr:
    value = round(float(value), 3)
    if value == int(value):
        value = int(value)
    node: ast.expr = ast.Constant(abs(value))
    return ast.UnaryOp(ast.USub(), node) if value < 0 else node


def _parents(tree: ast.Module) -> dict[int, ast.AST]:
    return {id(child): parent for parent in ast.walk(tree) for child in ast.iter_child_nodes(parent)}


def _edited(tree: ast.Module, index: int, change: Callable[[ast.AST, ast.Module], None]) -> str:
    """Deep-copy ``tree``, apply ``change`` to its node number ``index`` (ast.walk order), unparse."""
    clone = copy.deepcopy(tree)
    change(list(ast.walk(clone))[index], clone)
    return ast.unparse(ast.fix_missing_locations(clone))


def _line(node: ast.AST) -> str:
    return f"line {getattr(node, 'lineno', '?')}"


# --------------------------------------------------------------------------- move_point


def _drawing_names(tree: ast.Module) -> set[str]:
    """Names read inside coordinate tuples/lists or in the arguments of drawing and text calls."""
    names = set()
    for node in ast.walk(tree):
        holders = []
        if isinstance(node, ast.Tuple | ast.List):
            holders = node.elts
        elif _call_name(node) in DRAW_CALLS | TEXT_CALLS:
            holders = list(node.args) + [k.value for k in node.keywords]
        for holder in holders:
            names |= {n.id for n in ast.walk(holder) if isinstance(n, ast.Name)}
    return names


def _coordinate_sites(tree: ast.Module) -> list[tuple[int, ast.AST]]:
    """Tuples/lists of 2-3 numbers that are not keyword sizes, and ``name = number`` assignments
    whose name feeds a drawing call or a coordinate tuple."""
    parents, sites, drawn = _parents(tree), [], _drawing_names(tree)
    for index, node in enumerate(ast.walk(tree)):
        if isinstance(node, ast.Tuple | ast.List) and 2 <= len(node.elts) <= 3:
            if not all(_number(e) is not None for e in node.elts):
                continue
            parent = parents.get(id(node))
            if isinstance(parent, ast.keyword) and parent.arg not in COORD_KEYWORDS:
                continue
            if isinstance(parent, ast.Call) and _call_name(parent) in {"subplots", "figure", "set_size_inches"}:
                continue
            sites.append((index, node))
        elif isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            name = node.targets[0].id
            if _number(node.value) is not None and name in drawn and not NON_COORD_NAME.search(name):
                sites.append((index, node))
    return sites


def _coordinate_scale(sites: list[tuple[int, ast.AST]]) -> float:
    values = []
    for _, node in sites:
        elts = node.elts if isinstance(node, ast.Tuple | ast.List) else [node.value]
        values += [abs(_number(e)) for e in elts]
    return max([v for v in values if v > 0] or [1.0])


@register_script_edit("move_point")
def move_point(tree: ast.Module, rng: np.random.Generator) -> list[ScriptEdit]:
    """Move one point (a coordinate tuple, or one ``x = 1.5`` value) by 5-10 % of the drawing's extent."""
    sites = _coordinate_sites(tree)
    scale = _coordinate_scale(sites)
    edits = []
    for index, node in sites:
        step = scale * rng.uniform(0.05, 0.10)
        if isinstance(node, ast.Assign):
            old = _number(node.value)
            new = old + step * rng.choice([-1.0, 1.0])

            def change(target, _, new=new):
                target.value = _literal(new)

            detail = f"{node.targets[0].id} = {old:g} -> {round(new, 3):g} ({_line(node)})"
        else:
            old_point = [_number(e) for e in node.elts]
            angle = rng.uniform(0, 2 * np.pi)
            delta = [step * np.cos(angle), step * np.sin(angle)] + [0.0] * (len(old_point) - 2)
            new_point = [o + d for o, d in zip(old_point, delta)]

            def change(target, _, new_point=new_point):
                target.elts = [_literal(v) for v in new_point]

            detail = (f"({', '.join(f'{v:g}' for v in old_point)}) -> "
                      f"({', '.join(f'{round(v, 3):g}' for v in new_point)}) ({_line(node)})")
        edits.append(ScriptEdit("move_point", _edited(tree, index, change), detail))
    return edits


# --------------------------------------------------------------------------- labels and numbers


def _text_string_sites(tree: ast.Module) -> list[tuple[int, ast.Constant]]:
    """String constants passed (positionally or as ``s=``/``text=``) to text/annotate calls."""
    sites, index_of = [], {id(n): i for i, n in enumerate(ast.walk(tree))}
    for node in ast.walk(tree):
        if _call_name(node) in TEXT_CALLS:
            args = list(node.args) + [k.value for k in node.keywords if k.arg in ("s", "text")]
            sites += [(index_of[id(a)], a) for a in args if isinstance(a, ast.Constant) and isinstance(a.value, str)]
    return sites


def _label_sites(tree: ast.Module) -> list[tuple[int, int, str]]:
    """(node index, character position or -1, letter) of every vertex label in the script.

    Labels are single capital letters (``'A'``, ``'$B$'``, ``"C'"``) passed to text/annotate calls,
    used as dict keys (``{'A': (0, 0)}``) or as tuple/list items (``[('A', A), ...]``), and the
    letters of a string of distinct capitals passed to ``zip``/``enumerate`` (``zip('ABC', points)``).
    """
    index_of = {id(n): i for i, n in enumerate(ast.walk(tree))}
    candidates: list[ast.AST] = [node for _, node in _text_string_sites(tree)]
    spelled: list[ast.Constant] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Dict):
            candidates += [k for k in node.keys if k is not None]
        elif isinstance(node, ast.Tuple | ast.List):
            candidates += node.elts
        elif _call_name(node) in ("zip", "enumerate"):
            spelled += [a for a in node.args if isinstance(a, ast.Constant) and isinstance(a.value, str)]
    sites, seen = [], set()
    for node in candidates:
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in seen:
            match = LABEL_RE.match(node.value)
            if match:
                seen.add(id(node))
                sites.append((index_of[id(node)], -1, match.group(2)))
    for node in spelled:
        text = node.value
        if 2 <= len(text) <= 8 and text.isalpha() and text.isupper() and len(set(text)) == len(text):
            sites += [(index_of[id(node)], position, letter) for position, letter in enumerate(text)]
    return sites


def _relabel(node: ast.Constant, position: int, old: str, new: str) -> None:
    if position >= 0:
        node.value = node.value[:position] + new + node.value[position + 1:]
    else:
        node.value = node.value.replace(old, new, 1)


@register_script_edit("swap_labels")
def swap_labels(tree: ast.Module, rng: np.random.Generator) -> list[ScriptEdit]:
    """Exchange two vertex labels (``A`` <-> ``B``) wherever they are drawn or named (see _label_sites)."""
    labels = _label_sites(tree)
    nodes = list(ast.walk(tree))
    edits, seen = [], set()
    for i, (index_a, pos_a, a) in enumerate(labels):
        for index_b, pos_b, b in labels[i + 1:]:
            if a == b or frozenset((a, b)) in seen:
                continue
            seen.add(frozenset((a, b)))

            def change(_, clone, index_a=index_a, index_b=index_b, pos_a=pos_a, pos_b=pos_b, a=a, b=b):
                clone_nodes = list(ast.walk(clone))
                _relabel(clone_nodes[index_a], pos_a, a, b)
                _relabel(clone_nodes[index_b], pos_b, b, a)

            detail = f"labels {a} <-> {b} ({_line(nodes[index_a])}, {_line(nodes[index_b])})"
            edits.append(ScriptEdit("swap_labels", _edited(tree, index_a, change), detail, caption_swap=(a, b)))
    return edits


def new_number(old: str, is_angle: bool, rng: np.random.Generator) -> str:
    """A plausible different value: another common angle, or an integer/decimal nearby."""
    value = float(old)
    if is_angle:
        choices = [a for a in ANGLE_VALUES if a != value and abs(a - value) <= 45]
        return str(int(rng.choice(choices or [a for a in ANGLE_VALUES if a != value])))
    if "." in old:
        decimals = len(old.split(".")[1])
        factor = rng.choice([0.6, 0.75, 1.25, 1.5])
        return f"{value * factor:.{decimals}f}"
    integer = int(value)
    span = max(2, integer // 2)
    options = [v for v in range(max(1, integer - span), integer + span + 1) if v != integer]
    return str(int(rng.choice(options)))


@register_script_edit("change_number")
def change_number(tree: ast.Module, rng: np.random.Generator) -> list[ScriptEdit]:
    """Change the number of a numeric label (``"8"`` -> ``"6"``, ``"60°"`` -> ``"45°"``, ``"5 cm"`` -> ``"7 cm"``)."""
    edits = []
    for index, node in _text_string_sites(tree):
        match = NUMBER_RE.search(node.value)
        if not match:
            continue
        old = match.group(1)
        rest = node.value[match.end():]
        is_angle = rest.lstrip().startswith(("°", "^\\circ", "^{\\circ}", "\\degree", "deg"))
        new = new_number(old, is_angle, rng)
        text = node.value[: match.start()] + new + rest

        def change(target, _, text=text):
            target.value = text

        detail = f"label {node.value!r} -> {text!r} ({_line(node)})"
        edits.append(ScriptEdit("change_number", _edited(tree, index, change), detail, caption_number=(old, new)))
    return edits


# --------------------------------------------------------------------------- elements and styles


@register_script_edit("remove_element")
def remove_element(tree: ast.Module, rng: np.random.Generator) -> list[ScriptEdit]:
    """Drop one statement that draws an element (plot, Line2D, Circle, Polygon, fill, add_patch, ...)."""
    edits = []
    for index, node in enumerate(ast.walk(tree)):
        if isinstance(node, ast.Expr) and _call_name(node.value) in DRAW_CALLS:

            def change(target, _):
                target.value = ast.Constant(None)  # keeps the enclosing block non-empty

            detail = f"removed {ast.unparse(node.value)[:80]} ({_line(node)})"
            edits.append(ScriptEdit("remove_element", _edited(tree, index, change), detail))
    return edits


FMT_RE = re.compile(r"^([a-zA-Z.,o^v<>sp*hH+xXDd|_1234]*?)(--|-\.|-|:)?([a-zA-Z.,o^v<>sp*hH+xXDd|_1234]*)$")
SOLID = {"-", "solid", None}


def _swapped_style(style: str | None) -> str:
    return "--" if style in SOLID else "-"


@register_script_edit("change_linestyle")
def change_linestyle(tree: ast.Module, rng: np.random.Generator) -> list[ScriptEdit]:
    """Turn a solid line dashed or a dashed/dotted one solid (format string or ``linestyle=``)."""
    edits = []
    for index, node in enumerate(ast.walk(tree)):
        name = _call_name(node)
        if name not in STYLED_CALLS:
            continue
        keyword = next((k for k in node.keywords if k.arg in ("linestyle", "ls")), None)
        fmt = next((a for a in node.args if isinstance(a, ast.Constant) and isinstance(a.value, str)), None)
        if keyword is not None:
            old = keyword.value.value if isinstance(keyword.value, ast.Constant) else None
            if not (old is None or isinstance(old, str)):
                continue
            new = _swapped_style(old)

            def change(target, _, new=new):
                for k in target.keywords:
                    if k.arg in ("linestyle", "ls"):
                        k.value = ast.Constant(new)
        elif name == "plot" and fmt is not None and FMT_RE.match(fmt.value):
            match = FMT_RE.match(fmt.value)
            old = match.group(2) or "-"
            if match.group(2) is None and (match.group(1) + match.group(3)).strip("bgrcmykw"):
                continue  # a marker-only format: no line to restyle
            new = _swapped_style(old)
            text = match.group(1) + new + match.group(3)
            position = node.args.index(fmt)

            def change(target, _, position=position, text=text):
                target.args[position] = ast.Constant(text)
        else:
            old, new = "-", "--"

            def change(target, _):
                target.keywords.append(ast.keyword("linestyle", ast.Constant("--")))

        detail = f"{name}: linestyle {old!r} -> {new!r} ({_line(node)})"
        edits.append(ScriptEdit("change_linestyle", _edited(tree, index, change), detail))
    return edits


def propose_edits(script: str, rng: np.random.Generator, types: list[str] | None = None) -> dict[str, list[ScriptEdit]]:
    """Every candidate of every edit type (``types`` or all registered), by type.

    Raises:
        SyntaxError: the script does not parse.
    """
    tree = ast.parse(script)
    return {name: get_script_edit(name)(tree, rng) for name in (types or list_script_edits())}
