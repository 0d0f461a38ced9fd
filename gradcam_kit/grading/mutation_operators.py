"""The operators of the mutator: each finds where one kind of edit applies in a function.

See :mod:`gradcam_kit.grading.mutator`. An operator's ``sites`` yields ``(node, [replacement, ...])``
for each place it edits; the mutator makes one mutant per replacement.
"""

from __future__ import annotations

import ast
import copy
import re
from dataclasses import dataclass
from typing import Callable, Iterator, Sequence, TypeGuard

__all__ = ["OPERATORS", "Operator"]


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


def _method(node: ast.AST | None, *names: str) -> TypeGuard[ast.Call]:
    """Whether ``node`` is a call ``x.name(...)`` or ``torch.name(...)``/``F.name(...)`` for one of ``names``."""
    return isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in names


def _receiver(node: ast.Call) -> ast.expr:
    return node.func.value  # type: ignore[attr-defined]


def _is_module_function(node: ast.Call) -> bool:
    """``torch.f(x, ...)`` or ``F.f(x, ...)`` rather than ``x.f(...)``."""
    value = _receiver(node)
    return isinstance(value, ast.Name) and value.id in ("torch", "F")


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


_DIMS: dict[tuple[int, ...], list[tuple[int, ...]]] = {
    (2, 3): [(1, 2), (1, 3), (2,), (3,), (3, 2), (-2, -1)], (1, 2): [(0, 1), (2, 3)]}


def _dims_changed(function: ast.FunctionDef) -> Iterator[tuple[ast.AST, list]]:
    """Another axis for a reduction: ``dim=(2, 3)`` -> (1, 2), (2,), ... ; ``dim=1`` -> 0, 2."""
    for node in _walk(function):
        if not isinstance(node, ast.keyword) or node.arg != "dim":
            continue
        value = node.value
        others: Sequence[object]
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
            target = parameter

            def visit_Name(self, name: ast.Name) -> ast.AST:
                if name.id == self.target and isinstance(name.ctx, ast.Load):
                    return _with("F.relu(p)", p=name)
                return name

            def visit_Return(self, ret: ast.Return) -> ast.AST:
                self.generic_visit(ret)
                return ast.Return(value=ret.value.args[0]) if _method(ret.value, "relu") else ret

        Rectify().visit(edited)
        yield function, [edited]


def _booleans_toggled(function: ast.FunctionDef) -> Iterator[tuple[ast.AST, list]]:
    """``align_corners=False`` -> ``True``, ``keepdim=True`` -> ``False``, ... ; ``largest=False`` added to ``topk``."""
    for node in _walk(function):
        if isinstance(node, ast.keyword) and isinstance(node.value, ast.Constant) \
                and isinstance(node.value.value, bool):
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
        if _method(node, "register_forward_hook", "register_full_backward_hook") \
                and isinstance(_receiver(node), ast.Name):
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
            elif isinstance(right, ast.BinOp) and isinstance(right.op, ast.Add) \
                    and isinstance(right.right, ast.Constant):
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
            table = derived

            def visit_Call(self, call: ast.Call) -> ast.AST:
                self.generic_visit(call)
                if _method(call, "min", "max", "amin", "amax") and isinstance(_receiver(call), ast.Name) \
                        and _receiver(call).id in self.table:  # type: ignore[attr-defined]
                    call.func.value = copy.deepcopy(self.table[_receiver(call).id])  # type: ignore[attr-defined]
                return call

        Before().visit(edited)
        yield function, [edited]


OPERATORS: tuple[Operator, ...] = (
    Operator("reduction", "mean <-> sum, min <-> max, argmin <-> argmax", _reduction_swapped),
    Operator("axis", "another axis for a reduction", _dims_changed),
    Operator("sign", "a value returned, stored or back-propagated, negated", _sign_flipped),
    Operator("relu", "the ReLU removed, or replaced by clamp(min=0), clamp(0, 1) or abs", _relu_edited),
    Operator("relu_moved", "the ReLU moved from the result onto one input", _relu_moved),
    Operator("flag", "a boolean argument toggled (align_corners, keepdim...); largest=False for topk",
             _booleans_toggled),
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
