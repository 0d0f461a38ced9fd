"""Observations of a model around a call: the hooks registered on it, and what the call changed.

:func:`hook_table` lists every hook of a model by module and kind (global module hooks too);
:func:`added_hooks` compares two tables; :class:`ModelWatch` records, after a call, the hooks left,
the training flag and whether weights or buffers changed.
"""

from __future__ import annotations

from typing import Any

__all__ = ["ModelWatch", "added_hooks", "hook_table"]

_HOOK_KINDS = (("_forward_pre_hooks", "forward_pre"), ("_forward_hooks", "forward"),
               ("_backward_pre_hooks", "full_backward_pre"), ("_backward_hooks", "backward"))


def hook_table(model: Any) -> dict[str, dict[str, set[int]]]:
    """Module name -> hook kind -> ids of the hooks registered on it (``<model>`` for the root)."""
    import torch

    table: dict[str, dict[str, set[int]]] = {}
    for name, module in torch.nn.Module.named_modules(model):
        entry: dict[str, set[int]] = {}
        for attribute, kind in _HOOK_KINDS:
            hooks = module.__dict__.get(attribute) or {}
            if hooks:
                if kind == "backward" and module.__dict__.get("_is_full_backward_hook"):
                    kind = "full_backward"
                entry[kind] = set(hooks.keys())
        if entry:
            table[name or "<model>"] = entry
    module_globals = torch.nn.modules.module
    global_entry = {
        kind: set(getattr(module_globals, attribute, {}).keys())
        for attribute, kind in (("_global_forward_pre_hooks", "forward_pre"), ("_global_forward_hooks", "forward"),
                                ("_global_backward_pre_hooks", "full_backward_pre"),
                                ("_global_backward_hooks", "full_backward"))
        if getattr(module_globals, attribute, None)
    }
    if global_entry:
        table["<all modules>"] = global_entry
    return table


def added_hooks(before: dict[str, dict[str, set[int]]], after: dict[str, dict[str, set[int]]]) -> dict[str, list[str]]:
    """Module name -> the kinds of hook that ``after`` has and ``before`` had not (sorted)."""
    added: dict[str, list[str]] = {}
    for name, kinds in after.items():
        new = sorted(kind for kind, ids in kinds.items() if ids - before.get(name, {}).get(kind, set()))
        if new:
            added[name] = new
    return added


def _fingerprint(tensors: list[Any]) -> list[float]:
    import torch

    with torch.no_grad():
        return [float(t.detach().double().sum()) for t in tensors]


class ModelWatch:
    """What a call did to a model: hooks left, training flag, weights and buffers changed."""

    def __init__(self, model: Any) -> None:
        import torch

        self.model = model
        self.parameters = list(torch.nn.Module.parameters(model))
        self.buffers = [b for b in torch.nn.Module.buffers(model) if b.is_floating_point()]
        self.weights = _fingerprint(self.parameters)
        self.buffer_values = _fingerprint(self.buffers)

    def observations(self) -> dict[str, Any]:
        import torch

        try:
            return {
                "hooks_left": sorted(hook_table(self.model)),
                "training": bool(torch.nn.Module.__getattribute__(self.model, "training")),
                "weights_changed": _fingerprint(self.parameters) != self.weights,
                "buffers_changed": _fingerprint(self.buffers) != self.buffer_values,
            }
        except Exception as error:  # a model broken beyond reading
            return {"hooks_left": [], "training": None, "note": f"the model could not be inspected ({error})"}

