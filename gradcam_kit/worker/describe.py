"""Plain-data descriptions of what the student's code returned (:class:`Describer`).

Nothing of the student's making crosses to the grader but what this module reduces it to: numbers,
strings, lists, tuples, dicts, and records of tensors, arrays, numpy scalars, figures (each image
drawn: :func:`gradcam_kit.worker.images.drawn_image`) and other objects (their type only). The
student's classes are read through the built-in types' own methods (``int.__int__``,
``list.__iter__``...), never through methods they may have overridden.
"""

from __future__ import annotations

import sys
from types import ModuleType
from typing import Any

import numpy as np

from gradcam_kit.worker.images import MAX_AXES_IMAGES, MAX_FIGURE_AXES, drawn_image

__all__ = ["MAX_DEPTH", "MAX_ITEMS", "MAX_STRING", "Describer", "ResultTooLarge", "type_name"]

MAX_ITEMS = 10_000
MAX_STRING = 100_000
MAX_DEPTH = 20


class ResultTooLarge(Exception):
    """The arrays of a result exceed the budget of the answer (``Limits.result_bytes``)."""


def type_name(value: Any) -> str:
    """The qualified name of ``value``'s class (``torch.Tensor``; ``int`` for the built-ins)."""
    kind = type(value)
    module = getattr(kind, "__module__", "") or ""
    name = getattr(kind, "__qualname__", "") or kind.__name__
    name = name if isinstance(name, str) else "?"
    return name if module in ("builtins", "") or not isinstance(module, str) else f"{module}.{name}"


def _mro(value: Any) -> tuple[type, ...]:
    return type.__dict__["__mro__"].__get__(type(value))


class Describer:
    """Reduces any object to plain data, with a budget on the bytes of arrays."""

    def __init__(self, budget: int) -> None:
        self.budget = budget

    def _spend(self, array: np.ndarray) -> np.ndarray:
        self.budget -= array.nbytes
        if self.budget < 0:
            raise ResultTooLarge
        return array

    def describe(self, value: Any, depth: int = 0) -> Any:
        kind = type(value)
        if value is None or kind is bool:
            return value
        mro = _mro(value)
        if int in mro and bool not in mro:
            return int.__int__(value)
        if float in mro:
            return float.__float__(value)
        if str in mro:
            text = str.__str__(value)
            return text if len(text) <= MAX_STRING else {"kind": "object", "type": "str", "length": len(text)}
        if depth >= MAX_DEPTH:
            return {"kind": "object", "type": type_name(value), "note": "nested too deeply"}
        torch = sys.modules.get("torch")
        if torch is not None and torch.Tensor in mro:
            return self._tensor(value, torch)
        if np.ndarray in mro:
            return self._ndarray(value)
        if np.generic in mro:
            return self._numpy_scalar(value)
        if list in mro or tuple in mro:
            items = list.__iter__(value) if list in mro else tuple.__iter__(value)
            size = list.__len__(value) if list in mro else tuple.__len__(value)
            if size > MAX_ITEMS:
                return {"kind": "object", "type": type_name(value), "length": size, "note": "too long"}
            described = [self.describe(item, depth + 1) for item in items]
            return described if list in mro else tuple(described)
        if dict in mro:
            if dict.__len__(value) > MAX_ITEMS:
                return {"kind": "object", "type": type_name(value), "length": dict.__len__(value), "note": "too long"}
            return {self._key(key): self.describe(item, depth + 1) for key, item in dict.items(value)}
        figure = self._figure(value, mro)
        if figure is not None:
            return figure
        return {"kind": "object", "type": type_name(value)}

    def _key(self, key: Any) -> Any:
        mro = _mro(key)
        if str in mro:
            return str.__str__(key)
        if int in mro and bool not in mro:
            return int.__int__(key)
        if key is None or type(key) is bool:
            return key
        return f"<{type_name(key)} key>"

    def _tensor(self, value: Any, torch: ModuleType) -> dict[str, Any]:
        with torch._C.DisableTorchFunctionSubclass():
            base = value if type(value) is torch.Tensor else torch.Tensor.as_subclass(value, torch.Tensor)
            info: dict[str, Any] = {
                "kind": "tensor", "type": type_name(value), "dtype": str(base.dtype), "device": str(base.device),
                "requires_grad": bool(base.requires_grad), "shape": [int(size) for size in base.shape],
            }
            try:
                data = base.detach()
                if data.layout != torch.strided:
                    data = data.to_dense()
                if data.is_quantized:
                    data = data.dequantize()
                data = data.cpu().resolve_conj().resolve_neg()
                if data.dtype == torch.bfloat16 or "float8" in str(data.dtype):
                    data = data.float()
                array = np.array(data.contiguous().numpy(), copy=True)
                info["array"] = self._spend(array)
            except ResultTooLarge:
                raise
            except Exception as error:  # meta tensors, exotic subclasses
                info["array"] = None
                info["note"] = f"its values could not be read ({type(error).__name__})"
        return info

    def _ndarray(self, value: Any) -> dict[str, Any]:
        array = np.ndarray.view(value, np.ndarray)
        info: dict[str, Any] = {"kind": "ndarray", "type": type_name(value), "dtype": str(array.dtype),
                                "shape": list(array.shape)}
        info["array"] = None if array.dtype.hasobject else self._spend(np.array(array, copy=True))
        return info

    def _numpy_scalar(self, value: Any) -> dict[str, Any]:
        info: dict[str, Any] = {"kind": "numpy_scalar", "type": type_name(value), "dtype": str(value.dtype)}
        try:
            item = np.asarray(value).item()
        except Exception:
            item = None
        info["value"] = item if type(item) in (int, float, bool) else None
        return info

    def _figure(self, value: Any, mro: tuple[type, ...]) -> dict[str, Any] | None:
        """A figure: for each of its axes, the title and what its images draw (see :func:`drawn_image`)."""
        figure_module = sys.modules.get("matplotlib.figure")
        if figure_module is None or figure_module.Figure not in mro:
            return None
        axes = []
        try:
            for ax in list(value.get_axes())[:MAX_FIGURE_AXES]:
                images = list(ax.images)
                axes.append({"title": str(ax.get_title()), "n_images": len(images),
                             "images": [self._drawn_image(image) for image in images[:MAX_AXES_IMAGES]]})
            suptitle = value._suptitle.get_text() if getattr(value, "_suptitle", None) is not None else ""
        except ResultTooLarge:
            raise
        except Exception as error:
            return {"kind": "figure", "type": type_name(value), "axes": axes, "note": f"unreadable ({error})"}
        return {"kind": "figure", "type": type_name(value), "axes": axes, "suptitle": str(suptitle)}

    def _drawn_image(self, image: Any) -> dict[str, Any]:
        """What one ``AxesImage`` draws, or a note saying why it cannot be read."""
        try:
            described = drawn_image(image)
        except Exception as error:  # a broken or hostile artist
            return {"kind": "image", "type": type_name(image), "grid": None,
                    "note": f"unreadable ({type(error).__name__})"}
        for key in ("grid", "alpha_grid"):
            if described.get(key) is not None:
                described[key] = self._spend(described[key])
        return described

