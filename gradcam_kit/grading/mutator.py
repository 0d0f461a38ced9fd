"""Mutants of the answer key: small AST edits of the seven graded functions, for testing the judge.

The answer key here is the solution code of the source notebook's graded cells (what
:func:`gradcam_kit.grading.samples.solution_notebook` hands in). Each :class:`Operator` finds the
places in a function where it applies and proposes one or more replacements; each replacement is
one :class:`Mutant`: the function's cell with that one edit. The judge must take from each mutant
exactly the points of the function it edits (``benchmarks/mutants.py``; a sample in
``tests/test_mutants.py``), unless the mutant is listed in :data:`EQUIVALENT` with the reason it
behaves as the original does on every input the specification allows.

Operators are matched on the shape of the code, not on its text: an edit of the solution changes
which mutants there are, never makes one silently equal to the original (such edits are dropped).
"""

from __future__ import annotations

import ast
import copy
import dataclasses
import re
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator, Mapping, Sequence

__all__ = ["EQUIVALENT", "OPERATORS", "VERDICTS", "Mutant", "Operator", "judged", "mutants", "mutants_of"]

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
        import hashlib

        return f"{self.function}.{self.operator}.{hashlib.sha1(self.key.encode()).hexdigest()[:8]}"


@dataclass(frozen=True)
class Operator:
    """A kind of edit.

    Attributes
    ----------
    name : str
    description : str
    sites : callable
        ``sites(function_def) -> iterator of (node, [replacement, ...])``: the nodes it edits, each
        with what may replace it (a node; a list of statements, or ``None`` to delete, for a
        statement).
    """

    name: str
    description: str
    sites: Callable[[ast.FunctionDef], Iterator[tuple[ast.AST, list]]]


# ------------------------------------------------------------------------------------------------
# building blocks
# ------------------------------------------------------------------------------------------------
def _expr(text: str) -> ast.expr:
    return ast.parse(text, mode="eval").body


def _with(template: str, **parts: ast.AST) -> ast.expr:
    """``template`` parsed, with each name ``parts`` key replaced by a copy of that node."""
    class Fill(ast.NodeTransformer):
        def visit_Name(self, node: ast.Name) -> ast.AST:
            return copy.deepcopy(parts[node.id]) if node.id in parts else node

    return Fill().visit(_expr(template))


def _method(node: ast.AST, *names: str) -> bool:
    """Whether ``node`` is a call ``x.name(...)`` or ``torch.name(...)``/``F.name(...)`` for one of ``names``."""
    return isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in names


def _receiver(node: ast.Call) -> ast.expr:
    return node.func.value  # type: ignore[attr-defined]


def _is_module_function(node: ast.Call) -> bool:
    """``torch.f(x, ...)`` or ``F.f(x, ...)`` rather than ``x.f(...)``."""
    value = _receiver(node)
    return isinstance(value, ast.Name) and value.id in ("torch", "F")


def _subject(node: ast.Call) -> ast.expr:
    """The tensor a reduction or activation applies to: ``x`` in ``x.f()`` and in ``torch.f(x)``."""
    return node.args[0] if _is_module_function(node) and node.args else _receiver(node)


def _walk(function: ast.FunctionDef) -> Iterator[ast.AST]:
    """The function's nodes, docstring aside, in a fixed order."""
    for node in ast.walk(function):
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str):
            continue
        yield node


def _parameters(function: ast.FunctionDef) -> list[str]:
    return [argument.arg for argument in function.args.args]


# ------------------------------------------------------------------------------------------------
# the operators
# ------------------------------------------------------------------------------------------------
_REDUCTIONS = {"mean": ["sum"], "sum": ["mean"], "amax": ["amin"], "amin": ["amax"], "max": ["min"],
               "min": ["max"], "argmax": ["argmin"], "argmin": ["argmax"]}


def _reduction_swapped(function: ast.FunctionDef) -> Iterator[tuple[ast.AST, list]]:
    """mean <-> sum, min <-> max, argmin <-> argmax."""
    for node in _walk(function):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in _REDUCTIONS:
            replacements = []
            for other in _REDUCTIONS[node.func.attr]:
                edited = copy.deepcopy(node)
                edited.func.attr = other  # type: ignore[attr-defined]
                replacements.append(edited)
            yield node, replacements


_DIMS = {(2, 3): [(1, 2), (1, 3), (2,), (3,), (3, 2), (-2, -1)], (1, 2): [(0, 1), (2, 3)]}


def _dims_changed(function: ast.FunctionDef) -> Iterator[tuple[ast.AST, list]]:
    """Another axis for a reduction: ``dim=(2, 3)`` -> (1, 2), (2,), ... ; ``dim=1`` -> 0, 2."""
    for node in _walk(function):
        if not isinstance(node, ast.keyword) or node.arg != "dim":
            continue
        value = node.value
        if isinstance(value, ast.Tuple) and all(isinstance(e, ast.Constant) for e in value.elts):
            dims = tuple(e.value for e in value.elts)  # type: ignore[attr-defined]
            others = _DIMS.get(dims, [])
        elif isinstance(value, ast.Constant) and isinstance(value.value, int):
            others = [d for d in (value.value - 1, value.value + 1) if d >= 0]
        else:
            continue
        yield node, [ast.keyword(arg="dim", value=_expr(repr(other))) for other in others]


def _sign_flipped(function: ast.FunctionDef) -> Iterator[tuple[ast.AST, list]]:
    """The value returned, stored in a dict or back-propagated, negated."""
    for node in _walk(function):
        if isinstance(node, ast.Return) and node.value is not None \
                and not isinstance(node.value, (ast.Tuple, ast.List, ast.BinOp, ast.Name, ast.ListComp)):
            yield node.value, [_with("-(x)", x=node.value)]
        elif isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Subscript):
            yield node.value, [_with("-(x)", x=node.value)]
        elif _method(node, "backward") and not node.args and not isinstance(_receiver(node), ast.Name):
            yield _receiver(node), [_with("-(x)", x=_receiver(node))]


def _relu_edited(function: ast.FunctionDef) -> Iterator[tuple[ast.AST, list]]:
    """``F.relu(x)`` removed, or replaced by ``x.clamp(min=0)``, ``x.clamp(0, 1)``, ``x.abs()``."""
    for node in _walk(function):
        if _method(node, "relu") and _is_module_function(node) and len(node.args) == 1:
            x = node.args[0]
            yield node, [copy.deepcopy(x), _with("x.clamp(min=0)", x=x), _with("x.clamp(0, 1)", x=x),
                         _with("x.abs()", x=x)]


def _relu_moved(function: ast.FunctionDef) -> Iterator[tuple[ast.AST, list]]:
    """``return F.relu(v)`` becomes ``return v``, and each use of one parameter is rectified instead."""
    returns = [node for node in _walk(function) if isinstance(node, ast.Return) and _method(node.value, "relu")
               and _is_module_function(node.value)]
    if len(returns) != 1:
        return
    (node,) = returns
    for parameter in _parameters(function):
        edited = copy.deepcopy(function)

        class Rectify(ast.NodeTransformer):
            def visit_Name(self, name: ast.Name) -> ast.AST:
                if name.id == parameter and isinstance(name.ctx, ast.Load):
                    return _with("F.relu(p)", p=name)
                return name

            def visit_Return(self, ret: ast.Return) -> ast.AST:
                self.generic_visit(ret)
                return ast.Return(value=ret.value.args[0]) if _method(ret.value, "relu") else ret  # type: ignore

        Rectify().visit(edited)
        yield function, [edited]


def _booleans_toggled(function: ast.FunctionDef) -> Iterator[tuple[ast.AST, list]]:
    """``align_corners=False`` -> ``True``, ``keepdim=True`` -> ``False``, ... ; ``largest=False`` added to ``topk``."""
    for node in _walk(function):
        if isinstance(node, ast.keyword) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, bool):
            yield node, [ast.keyword(arg=node.arg, value=ast.Constant(not node.value.value))]
        elif _method(node, "topk") and not any(k.arg == "largest" for k in node.keywords):
            edited = copy.deepcopy(node)
            edited.keywords.append(ast.keyword(arg="largest", value=ast.Constant(False)))
            yield node, [edited]


def _keyword_dropped(function: ast.FunctionDef) -> Iterator[tuple[ast.AST, list]]:
    """A keyword argument left out (its default used instead)."""
    for node in _walk(function):
        if isinstance(node, ast.Call) and node.keywords:
            for index in range(len(node.keywords)):
                edited = copy.deepcopy(node)
                del edited.keywords[index]
                yield node, [edited]


_STRINGS = {"bilinear": ["nearest", "bicubic", "area", "nearest-exact"], "activations": ["gradients"],
            "gradients": ["activations"]}


def _strings_swapped(function: ast.FunctionDef) -> Iterator[tuple[ast.AST, list]]:
    """An interpolation mode for another; the two keys of the hooks' store swapped."""
    for node in _walk(function):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in _STRINGS:
            yield node, [ast.Constant(other) for other in _STRINGS[node.value]]


_CLASS = re.compile(r"^(class_idx|idx|k)$")


def _index_shifted(function: ast.FunctionDef) -> Iterator[tuple[ast.AST, list]]:
    """A class index or a count off by one: ``class_idx``, ``idx``, ``k`` -> ``x + 1``, ``x - 1``."""
    for node in _walk(function):
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load) and _CLASS.match(node.id):
            yield node, [_with("x + 1", x=node), _with("x - 1", x=node)]


def _target_changed(function: ast.FunctionDef) -> Iterator[tuple[ast.AST, list]]:
    """What is back-propagated: ``scores[0, c]`` -> its softmax, its log-softmax, the argmax, all classes."""
    for node in _walk(function):
        if _method(node, "backward") and not node.args and isinstance(_receiver(node), ast.Subscript):
            target = _receiver(node)
            scores, index = target.value, target.slice  # type: ignore[attr-defined]
            argmax = copy.deepcopy(target)
            if isinstance(index, ast.Tuple) and len(index.elts) == 2:
                argmax.slice.elts[1] = _with("int(s.argmax())", s=scores)  # type: ignore[attr-defined]
            yield target, [_with("s.softmax(dim=1)[i]", s=scores, i=index),
                           _with("s.log_softmax(dim=1)[i]", s=scores, i=index), argmax, _with("s.sum()", s=scores)]


def _call_removed(function: ast.FunctionDef) -> Iterator[tuple[ast.AST, list]]:
    """A call whose result is not used, deleted (``model.eval()``, ``handle.remove()``, a loop of them...),
    and a condition's test dropped (its body always runs)."""
    for node in _walk(function):
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Call):
            yield node, [None]
        elif isinstance(node, ast.For) and all(isinstance(s, ast.Expr) for s in node.body):
            yield node, [None]
        elif isinstance(node, ast.If) and not node.orelse:
            yield node, [copy.deepcopy(node.body)]


def _mode_swapped(function: ast.FunctionDef) -> Iterator[tuple[ast.AST, list]]:
    """``model.eval()`` -> ``model.train()``."""
    for node in _walk(function):
        if _method(node, "eval") and not node.args:
            edited = copy.deepcopy(node)
            edited.func.attr = "train"  # type: ignore[attr-defined]
            yield node, [edited]


def _finally_dropped(function: ast.FunctionDef) -> Iterator[tuple[ast.AST, list]]:
    """``try: A finally: B`` -> ``A; B``: the clean-up is skipped when ``A`` fails."""
    for node in _walk(function):
        if isinstance(node, ast.Try) and node.finalbody and not node.handlers:
            yield node, [copy.deepcopy(node.body) + copy.deepcopy(node.finalbody)]


def _conversion_removed(function: ast.FunctionDef) -> Iterator[tuple[ast.AST, list]]:
    """``x.detach()``, ``x.clone()``, ``x.cpu()`` -> ``x``."""
    for node in _walk(function):
        if _method(node, "detach", "clone", "cpu") and not node.args and not _is_module_function(node):
            yield node, [copy.deepcopy(_receiver(node))]


def _hook_moved(function: ast.FunctionDef) -> Iterator[tuple[ast.AST, list]]:
    """Hooks on the wrong module (the layer's first child), or on the layer's input (``inputs[0]``
    for ``output`` in a forward hook)."""
    for node in _walk(function):
        if _method(node, "register_forward_hook", "register_full_backward_hook") and isinstance(_receiver(node), ast.Name):
            yield _receiver(node), [_with("next(iter(m.children()), m)", m=_receiver(node))]
    for inner in _walk(function):
        if isinstance(inner, ast.FunctionDef) and _parameters(inner)[1:3] == ["inputs", "output"]:
            for node in _walk(inner):
                if isinstance(node, ast.Name) and node.id == "output" and isinstance(node.ctx, ast.Load):
                    yield node, [_expr("inputs[0]")]


def _guard_removed(function: ast.FunctionDef) -> Iterator[tuple[ast.AST, list]]:
    """Division by zero left unguarded: ``a / torch.where(c, s, ones)`` -> ``a / s``,
    ``a / (s + eps)`` -> ``a / s``, ``a / s.clamp(min=eps)`` -> ``a / s``; and ``torch.where(c, x, y)``
    -> ``x`` or ``y``."""
    for node in _walk(function):
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div):
            right = node.right
            if _method(right, "where") and len(right.args) == 3:
                yield right, [copy.deepcopy(right.args[1])]
            elif isinstance(right, ast.BinOp) and isinstance(right.op, ast.Add) and isinstance(right.right, ast.Constant):
                yield right, [copy.deepcopy(right.left)]
            elif _method(right, "clamp"):
                yield right, [copy.deepcopy(_receiver(right))]
        elif _method(node, "where") and _is_module_function(node) and len(node.args) == 3:
            yield node, [copy.deepcopy(node.args[1]), copy.deepcopy(node.args[2])]


def _order_changed(function: ast.FunctionDef) -> Iterator[tuple[ast.AST, list]]:
    """A list in reverse order; the item added at its end left out (``a + [b]`` -> ``a``)."""
    for node in _walk(function):
        if isinstance(node, ast.ListComp):
            yield node, [_with("x[::-1]", x=node)]
        elif isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add) and isinstance(node.right, ast.List):
            yield node, [copy.deepcopy(node.left)]


def _normalised_first(function: ast.FunctionDef) -> Iterator[tuple[ast.AST, list]]:
    """Min-max taken before upsampling: after ``m = F.interpolate(x, ...)``, the min and max of ``m``
    (and of names derived from it, e.g. ``m.flatten(1)``) are taken on ``x`` instead."""
    body = function.body
    for position, statement in enumerate(body):
        if not (isinstance(statement, ast.Assign) and len(statement.targets) == 1
                and isinstance(statement.targets[0], ast.Name) and _method(statement.value, "interpolate")
                and statement.value.args):
            continue
        derived: dict[str, ast.expr] = {statement.targets[0].id: statement.value.args[0]}
        for later in body[position + 1:]:
            if isinstance(later, ast.Assign) and len(later.targets) == 1 and isinstance(later.targets[0], ast.Name) \
                    and isinstance(later.value, ast.Call) and isinstance(later.value.func, ast.Attribute) \
                    and isinstance(later.value.func.value, ast.Name) and later.value.func.value.id in derived:
                value = copy.deepcopy(later.value)
                value.func.value = copy.deepcopy(derived[later.value.func.value.id])  # type: ignore[attr-defined]
                derived[later.targets[0].id] = value
        edited = copy.deepcopy(function)

        class Before(ast.NodeTransformer):
            def visit_Call(self, call: ast.Call) -> ast.AST:
                self.generic_visit(call)
                if _method(call, "min", "max", "amin", "amax") and isinstance(_receiver(call), ast.Name) \
                        and _receiver(call).id in derived:  # type: ignore[attr-defined]
                    call.func.value = copy.deepcopy(derived[_receiver(call).id])  # type: ignore[attr-defined]
                return call

        Before().visit(edited)
        yield function, [edited]


OPERATORS: tuple[Operator, ...] = (
    Operator("reduction", "mean <-> sum, min <-> max, argmin <-> argmax", _reduction_swapped),
    Operator("axis", "another axis for a reduction", _dims_changed),
    Operator("sign", "a value returned, stored or back-propagated, negated", _sign_flipped),
    Operator("relu", "the ReLU removed, or replaced by clamp(min=0), clamp(0, 1) or abs", _relu_edited),
    Operator("relu_moved", "the ReLU moved from the result onto one input", _relu_moved),
    Operator("flag", "a boolean argument toggled (align_corners, keepdim...); largest=False for topk", _booleans_toggled),
    Operator("keyword", "a keyword argument left out", _keyword_dropped),
    Operator("string", "another interpolation mode; the store's keys swapped", _strings_swapped),
    Operator("off_by_one", "a class index or a count off by one", _index_shifted),
    Operator("target", "the softmax, the log-softmax, the argmax or every class back-propagated", _target_changed),
    Operator("statement", "a call statement deleted; an if's test dropped", _call_removed),
    Operator("train", "model.eval() -> model.train()", _mode_swapped),
    Operator("finally", "try/finally -> the clean-up only when nothing fails", _finally_dropped),
    Operator("conversion", ".detach(), .clone() or .cpu() removed", _conversion_removed),
    Operator("hook", "hooks on the wrong module, or on the layer's input", _hook_moved),
    Operator("guard", "a division by zero unguarded; torch.where collapsed", _guard_removed),
    Operator("order", "a list reversed; its last item left out", _order_changed),
    Operator("normalise_first", "min-max taken before the upsampling", _normalised_first),
)
"""Every operator, in the order mutants are listed."""


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


_NO_GRAPH = "the hooks store detached tensors, so the map never has a graph to detach from"
_FRESH_GRADIENT = ("the map reads only the gradient of the layer's output, which each backward pass gives "
                   "afresh to the tensor hook; the parameters' gradients never enter it")
_EVAL_GIVEN = ("the grader, as the notebook, hands the function a model in eval mode (`grad_cam` is checked to "
               "leave it so); a model handed over in training mode would tell them apart")
_NOT_GRADED = "not graded: "

EQUIVALENT: dict[str, str] = {
    # register_gradcam_hooks
    "register_gradcam_hooks: if output.requires_grad:; output.register_hook(keep_gradient) -> "
    "output.register_hook(keep_gradient)":
        "the hooks are used with gradients on; `register_hook` fails on an output without grad only in a "
        "forward pass under `torch.no_grad()` with the hooks attached, which the specification does not ask for",
    "register_gradcam_hooks: grad.detach().clone() -> grad.detach() in `store['gradients'] = grad.detach().clone()`":
        "nothing modifies the gradient handed to a tensor hook afterwards, so the copy changes nothing",
    "register_gradcam_hooks: grad.detach() -> grad in `store['gradients'] = grad.detach().clone()`":
        "a plain backward pass gives gradients without a graph (create_graph=False): detaching them changes nothing",
    "register_gradcam_hooks: output.detach() -> output in `store['activations'] = output.detach().clone()`":
        "the same values, still attached to the graph: the notebook asks for the layer's output, not for a "
        "detached copy, and `grad_cam` detaches the map it returns",
    "register_gradcam_hooks: output.detach().clone() -> output.detach() in "
    "`store['activations'] = output.detach().clone()`":
        "without the copy, DenseNet's in-place ReLU rectifies the stored output at `features`: the 'mixed' "
        "convention, which the judge accepts by design; elsewhere nothing changes the output",
    # channel_weights
    "channel_weights: dim=(2, 3) -> dim=(3, 2) in `return gradients.mean(dim=(2, 3))`":
        "the same two axes in another order",
    "channel_weights: dim=(2, 3) -> dim=(-2, -1) in `return gradients.mean(dim=(2, 3))`":
        "the same two axes, counted from the end",
    # weighted_cam
    "weighted_cam: F.relu(combined) -> combined.clamp(min=0) in `return F.relu(combined)`":
        "`clamp(min=0)` is the ReLU",
    # upsample_normalize
    "upsample_normalize: F.interpolate(cam.unsqueeze(1), size=size, mode='bilinear', align_corners=False) -> "
    "F.interpolate(cam.unsqueeze(1), size=size, mode='bilinear') in "
    "`maps = F.interpolate(cam.unsqueeze(1), size=size, mode='bilinear', align_corners=False)`":
        "`align_corners` defaults to False for bilinear interpolation",
    "upsample_normalize: if not cam.is_floating_point():; cam = cam.float() -> cam = cam.float()":
        "the maps are float32 (the worker gives every array as a float32 tensor, as `grad_cam` makes them): "
        "`.float()` changes nothing",
    "upsample_normalize: torch.where(varies, span, torch.ones_like(span)) -> span in "
    "`scaled = (flat - low) / torch.where(varies, span, torch.ones_like(span))`":
        "the quotient of a constant map (0 / 0) is discarded by the final `torch.where(varies, scaled, zeros)`",
    "upsample_normalize: torch.where(varies, scaled, torch.zeros_like(scaled)) -> scaled in "
    "`return torch.where(varies, scaled, torch.zeros_like(scaled)).reshape(cam.shape[0], *size)`":
        "a constant map is then divided by 1: what is left is the interpolation's rounding (below 1e-6), zero to "
        "float32 precision (the judge allows 1e-4)",
    # grad_cam
    "grad_cam: heatmap[0].detach().cpu() -> heatmap[0].detach() in `return heatmap[0].detach().cpu()`":
        "grading runs on the CPU, where the map already is (on a GPU the judge's device check would tell them apart)",
    "grad_cam: heatmap[0].detach() -> heatmap[0] in `return heatmap[0].detach().cpu()`": _NO_GRAPH,
    "grad_cam: set_to_none=True -> set_to_none=False in `model.zero_grad(set_to_none=True)`": _FRESH_GRADIENT,
    "grad_cam: model.zero_grad(set_to_none=True) -> model.zero_grad() in `model.zero_grad(set_to_none=True)`":
        _FRESH_GRADIENT,
    "grad_cam: model.zero_grad(set_to_none=True) -> (deleted)": _FRESH_GRADIENT,
    "grad_cam: model.eval() -> (deleted)": _EVAL_GIVEN,
    # top_and_least
    "top_and_least: torch.as_tensor(scores).detach() -> torch.as_tensor(scores) in "
    "`scores = torch.as_tensor(scores).detach().reshape(-1)`":
        "`topk`, `argmin` and `.tolist()` give the same plain indices for scores with or without a graph",
    # show_grad_cam
    "show_grad_cam: plt.subplots(1, len(classes), figsize=(4 * len(classes), 4.6), layout='constrained') -> "
    "plt.subplots(1, len(classes), layout='constrained') in "
    "`fig, axes = plt.subplots(1, len(classes), figsize=(4 * len(classes), 4.6), layout='constrained')`":
        _NOT_GRADED + "the figure's size",
    "show_grad_cam: plt.subplots(1, len(classes), figsize=(4 * len(classes), 4.6), layout='constrained') -> "
    "plt.subplots(1, len(classes), figsize=(4 * len(classes), 4.6)) in "
    "`fig, axes = plt.subplots(1, len(classes), figsize=(4 * len(classes), 4.6), layout='constrained')`":
        _NOT_GRADED + "the figure's layout",
    "show_grad_cam: idx -> idx + 1 in `title = f'{label}: {class_names[idx]}\\nscore {scores[idx].item():.2f}'` "
    "(occurrence 2)":
        _NOT_GRADED + "the score printed in a title (students may print the raw score or its probability, in any "
        "format); the class name is graded",
    "show_grad_cam: idx -> idx - 1 in `title = f'{label}: {class_names[idx]}\\nscore {scores[idx].item():.2f}'` "
    "(occurrence 2)":
        _NOT_GRADED + "the score printed in a title (students may print the raw score or its probability, in any "
        "format); the class name is graded",
    "show_grad_cam: [f'top {rank}' for rank in range(1, len(classes))] -> "
    "[f'top {rank}' for rank in range(1, len(classes))][::-1] in "
    "`labels = [f'top {rank}' for rank in range(1, len(classes))] + ['least probable']`":
        _NOT_GRADED + "the words before the class name in a title (the class names and their order are graded)",
    "show_grad_cam: model.eval() -> (deleted)": _EVAL_GIVEN,
}
"""Mutants that behave as the answer key does on every input the specification allows (or differ
only in what is not graded, said so), by :attr:`Mutant.key`, with the reason. They must keep every
point."""


VERDICTS = {
    "killed": "loses exactly the points of the function it edits",
    "equivalent": "listed as equivalent, and keeps every point",
    "survived": "keeps every point, and is not listed as equivalent",
    "overcharged": "loses the points of its function and of another one (a bug charged twice)",
    "misplaced": "loses points, but not those of the function it edits",
    "not equivalent": "listed as equivalent, but loses points",
}
"""What the judge made of a mutant; only the first two are as they should be."""


def judged(mutant: Mutant, failed: Iterable[str]) -> str:
    """The verdict (a key of :data:`VERDICTS`) for ``mutant``, whose grading failed the tests ``failed``."""
    failed = set(failed)
    own = f"test_{mutant.function}"
    if mutant.key in EQUIVALENT:
        return "equivalent" if not failed else "not equivalent"
    if not failed:
        return "survived"
    if failed == {own}:
        return "killed"
    return "overcharged" if own in failed else "misplaced"
