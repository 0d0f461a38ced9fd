"""Mutants of the answer key: small AST edits of the seven graded functions, for testing the judge.

The answer key here is the solution code of the source notebook's graded cells (what
:func:`gradcam_kit.grading.samples.solution_notebook` hands in). Each :class:`Operator` finds the
places in a function where it applies and proposes one or more replacements; each replacement is
one :class:`Mutant`: the function's cell with that one edit. The judge must take from each mutant
exactly the points of the function it edits (``benchmarks/mutants.py``; a sample in
``tests/test_mutants.py``), unless the mutant is listed as equivalent, with the reason it behaves as
the original does on every input the specification allows
(:data:`gradcam_kit.grading.mutant_verdicts.EQUIVALENT`).

The operators are in :mod:`gradcam_kit.grading.mutation_operators`.

Operators are matched on the shape of the code, not on its text: an edit of the solution changes
which mutants there are, never makes one silently equal to the original (such edits are dropped).
"""

from __future__ import annotations

import ast
import copy
import dataclasses
import hashlib
import re
from dataclasses import dataclass
from typing import Iterable, Mapping, Sequence

from gradcam_kit.grading.mutation_operators import OPERATORS, Operator

__all__ = ["Mutant", "mutants", "mutants_of"]


@dataclass(frozen=True)
class Mutant:
    """One edit of one graded function.

    Attributes
    ----------
    function : str
        The graded function (the ``grade_id`` of its cell).
    operator : str
        The name of the :class:`Operator` that made it.
    before, after : str
        The code edited and what replaced it (one line each, as ``ast.unparse`` writes them).
    line : int
        Where the edit is, in the function's cell.
    source : str
        The whole mutated cell.
    """

    function: str
    operator: str
    before: str
    after: str
    line: int
    source: str
    context: str = ""
    """The first line of the statement edited, when the edit is inside it."""
    occurrence: int = 1
    """Which of the identical edits of that statement this is."""

    @property
    def key(self) -> str:
        """``function: before -> after [in `statement`]``: unique, and stable while the edited code is."""
        where = f" in `{self.context}`" if self.context else ""
        again = f" (occurrence {self.occurrence})" if self.occurrence > 1 else ""
        return f"{self.function}: {self.before} -> {self.after}{where}{again}"

    @property
    def name(self) -> str:
        """A file name for the mutant: the function, the operator and a short digest of the key."""
        return f"{self.function}.{self.operator}.{hashlib.sha1(self.key.encode()).hexdigest()[:8]}"


# ------------------------------------------------------------------------------------------------
# making mutants
# ------------------------------------------------------------------------------------------------
class _Replace(ast.NodeTransformer):
    def __init__(self, target: ast.AST, replacement) -> None:
        self.target, self.replacement = target, replacement

    def generic_visit(self, node: ast.AST) -> ast.AST:
        for field, old in ast.iter_fields(node):
            if isinstance(old, list):
                items = []
                for item in old:
                    if item is self.target:
                        if self.replacement is None:
                            continue
                        items.extend(self.replacement if isinstance(self.replacement, list) else [self.replacement])
                    elif isinstance(item, ast.AST):
                        items.append(self.visit(item))
                    else:
                        items.append(item)
                if not items and field in ("body", "orelse", "finalbody") and old:
                    items = [ast.Pass()]
                setattr(node, field, items)
            elif old is self.target:
                setattr(node, field, self.replacement)
            elif isinstance(old, ast.AST):
                self.visit(old)
        return node


def _one_line(node) -> str:
    if node is None:
        return "(deleted)"
    nodes = node if isinstance(node, list) else [node]
    text = "; ".join(ast.unparse(n).replace("\n", "; ") for n in nodes)
    return re.sub(r"\s+", " ", text)


def mutants_of(function: str, source: str, operators: Sequence[Operator] = OPERATORS) -> list[Mutant]:
    """Every mutant of one graded function's cell, in operator order.

    Parameters
    ----------
    function : str
        The function's name (the cell's ``grade_id``).
    source : str
        The cell's code (which defines it).

    Returns
    -------
    list of Mutant
        Without duplicates (by mutated source) and without edits that leave the code unchanged.
    """
    tree = ast.parse(source)
    definitions = [node for node in tree.body if isinstance(node, ast.FunctionDef) and node.name == function]
    if len(definitions) != 1:
        raise ValueError(f"the cell of {function} does not define it once")
    original = ast.unparse(tree)
    statements = _statements(definitions[0])
    seen = {original}
    keys: set[str] = set()
    found: list[Mutant] = []
    for operator in operators:
        for node, replacements in operator.sites(definitions[0]):
            for replacement in replacements:
                edited = _Replace(node, replacement).visit(_copy_keeping(tree, node))
                text = ast.unparse(ast.fix_missing_locations(edited))
                if text in seen:
                    continue
                seen.add(text)
                context = ""
                if isinstance(node, ast.FunctionDef):  # an edit in several places: the lines that differ
                    before, after = _diff_lines(ast.unparse(node), ast.unparse(replacement))
                else:
                    before, after = _one_line(node), _one_line(replacement)
                    statement = statements.get(id(node))
                    if statement is not None and statement is not node:
                        context = ast.unparse(statement).splitlines()[0].rstrip(":")
                mutant = Mutant(function, operator.name, before, after, getattr(node, "lineno", 0), text + "\n",
                                context)
                while mutant.key in keys:
                    mutant = dataclasses.replace(mutant, occurrence=mutant.occurrence + 1)
                keys.add(mutant.key)
                found.append(mutant)
    return found


def _statements(function: ast.FunctionDef) -> dict[int, ast.stmt]:
    """For each node of ``function`` (by ``id``), the innermost statement that holds it."""
    owner: dict[int, ast.stmt] = {}

    def visit(node: ast.AST, statement: ast.stmt | None) -> None:
        if isinstance(node, ast.stmt):
            statement = node
        if statement is not None:
            owner[id(node)] = statement
        for child in ast.iter_child_nodes(node):
            visit(child, statement)

    for child in function.body:
        visit(child, None)
    return owner


def _copy_keeping(tree: ast.Module, target: ast.AST) -> ast.Module:
    """A deep copy of ``tree`` in which ``target`` is the very object given (so it can be found)."""
    memo = {id(target): target}
    return copy.deepcopy(tree, memo)


def _diff_lines(before: str, after: str) -> tuple[str, str]:
    """The lines that differ between two versions of a function, each side on one line."""
    old, new = before.splitlines(), after.splitlines()
    start = 0
    while start < min(len(old), len(new)) and old[start] == new[start]:
        start += 1
    end = 0
    while end < min(len(old), len(new)) - start and old[-1 - end] == new[-1 - end]:
        end += 1
    squeeze = lambda lines: re.sub(r"\s+", " ", "; ".join(line.strip() for line in lines)) or "(nothing)"  # noqa: E731
    return squeeze(old[start:len(old) - end]), squeeze(new[start:len(new) - end])


def mutants(sources: Mapping[str, str], functions: Iterable[str]) -> list[Mutant]:
    """Every mutant of each of ``functions``, whose cells' code is ``sources[function]``."""
    return [mutant for function in functions for mutant in mutants_of(function, sources[function])]
