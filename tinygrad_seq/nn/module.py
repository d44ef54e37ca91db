"""`Module` and `Parameter`: parameter discovery, state dicts and checkpoints.

A module finds its parameters in its attributes: a `Parameter`, a submodule, or a list or
tuple of either. Names are dotted paths in attribute order, lists numbered as in PyTorch
(`layers.0.W_aa`). Checkpoints are `.npz` files, written atomically and read with
`allow_pickle=False`, so loading never runs code from a file.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator
from typing import Any

import numpy as np

from ..autograd import Tensor
from .serialization import CheckpointError, NpzReader, describe_names, save_arrays


class Parameter(Tensor):
    """A `Tensor` with `requires_grad=True` owned by a module (float32 unless made otherwise)."""

    __slots__ = ()

    def __init__(self, data: Any, name: str | None = None) -> None:
        super().__init__(data, requires_grad=True, name=name)


class Module:
    """Base class of layers, cells and models; `module(x)` runs `module.forward(x)`.

    >>> import numpy as np
    >>> from tinygrad_seq.nn import Linear
    >>> class TwoLayer(Module):
    ...     def __init__(self):
    ...         self.layers = [Linear(3, 4), Linear(4, 2)]
    ...     def forward(self, x):
    ...         return self.layers[1](self.layers[0](x).tanh())
    >>> [name for name, _ in TwoLayer().named_parameters()]
    ['layers.0.weight', 'layers.0.bias', 'layers.1.weight', 'layers.1.bias']
    """

    training: bool = True

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.forward(*args, **kwargs)

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError(f"{type(self).__name__}.forward")

    # ---- discovery ----
    def _children(self) -> Iterator[tuple[str, Any]]:
        for name, value in vars(self).items():
            if isinstance(value, Parameter | Module):
                yield name, value
            elif isinstance(value, list | tuple):
                for i, item in enumerate(value):
                    if isinstance(item, Parameter | Module):
                        yield f"{name}.{i}", item

    def named_parameters(self, prefix: str = "") -> Iterator[tuple[str, Parameter]]:
        """`(dotted_name, Parameter)` pairs in a stable order; a shared parameter appears once.

        A parameter without a `name` takes its dotted name here (without `prefix`), so
        gradient-check failures and graph pictures can say `W_u` rather than "input 3".
        """
        seen: set[int] = set()
        stack: list[tuple[str, Any]] = [(prefix, self)]
        while stack:
            path, module = stack.pop()
            if id(module) in seen:  # a shared submodule, or a cycle (a child holding its parent)
                continue
            seen.add(id(module))
            pending: list[tuple[str, Any]] = []
            for name, value in module._children():
                full = f"{path}.{name}" if path else name
                if isinstance(value, Parameter):
                    if id(value) not in seen:
                        seen.add(id(value))
                        if value.name is None and not prefix:
                            value.name = full
                        yield full, value
                else:
                    pending.append((full, value))
            stack.extend(reversed(pending))

    def parameters(self) -> list[Parameter]:
        """Every parameter, in `named_parameters()` order: what an optimiser is given.

        Warns (`UserWarning`, once per class) about a float `Tensor` attribute that is not a
        `Parameter` and requires no grad: it is left out of this list, so it would never be
        trained. Keep a constant as a NumPy array, or under a name starting with `_`.
        """
        _warn_untrained_tensors(self)
        return [p for _, p in self.named_parameters()]

    def modules(self) -> Iterator[Module]:
        """This module and every submodule, depth first, each once."""
        seen: set[int] = set()
        stack: list[Module] = [self]
        while stack:
            module = stack.pop()
            if id(module) not in seen:
                seen.add(id(module))
                yield module
                children = [v for _, v in module._children() if isinstance(v, Module)]
                stack.extend(reversed(children))

    def zero_grad(self) -> None:
        for p in self.parameters():
            p.grad = None

    def train(self, mode: bool = True) -> Module:
        for m in self.modules():
            m.training = mode
        return self

    def eval(self) -> Module:
        return self.train(False)

    def to(self, dtype: Any) -> Module:
        """Convert every parameter to `dtype` in place (e.g. float64 for gradient checks)."""
        dtype = np.dtype(dtype)
        if dtype.kind != "f":
            raise TypeError(f"Module.to: parameters must be floating point, got {dtype}")
        for p in self.parameters():
            p.data = p.data.astype(dtype)
            p.grad = None if p.grad is None else p.grad.astype(dtype)
        return self

    # ---- state ----
    def state_dict(self) -> dict[str, np.ndarray]:
        """A copy of every parameter's value, by dotted name."""
        return {name: p.data.copy() for name, p in self.named_parameters()}

    def load_state_dict(self, state: dict[str, Any], strict: bool = True) -> None:
        """Copy values from `state` into the parameters, checking everything first.

        Raises `KeyError` naming missing or unexpected keys (when `strict`), and `ValueError`
        naming keys whose shape differs or whose value is not a float array. On error no
        parameter has changed.
        """
        own = dict(self.named_parameters())
        missing = sorted(set(own) - set(state))
        unexpected = sorted(set(state) - set(own))
        problems = []
        bad_keys = strict and bool(missing or unexpected)
        if bad_keys:
            problems.append(f"missing keys {missing}, unexpected keys {unexpected}")
        for name in sorted(set(own) & set(state)):
            value = np.asarray(state[name])
            if value.shape != own[name].shape:
                problems.append(
                    f"'{name}' has shape {value.shape} in the state dict but {own[name].shape} "
                    "in the model"
                )
            elif value.dtype.kind not in "fiu":
                problems.append(f"'{name}' has non-numeric dtype {value.dtype}")
        if problems:
            message = f"load_state_dict into {type(self).__name__}: " + "; ".join(problems)
            raise (KeyError if bad_keys else ValueError)(message)
        for name in sorted(set(own) & set(state)):
            p = own[name]
            p.data = np.array(state[name], dtype=p.dtype)

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the state dict to `path` (`.npz`), atomically: a crash leaves the old file."""
        save_arrays(path, self.state_dict())

    def load(self, path: str | os.PathLike[str], strict: bool = True) -> Module:
        """Read a checkpoint written by `save`; on any error the module is unchanged.

        The file is opened once; every entry's header is checked, but only the entries
        naming this module's parameters are read. Raises `FileNotFoundError` for a missing
        file, `CheckpointError` naming the file for a bad one (running out of memory
        included), `KeyError` for missing or unexpected keys when `strict` and `ValueError`
        for mismatched shapes.
        """
        path = os.fspath(path)
        own = dict(self.named_parameters())
        before = {name: p.data for name, p in own.items()}
        with NpzReader(path) as archive:
            for name in archive.names:  # every header checked (pickles refused) first
                archive.header(name)
            missing, unexpected = set(own) - set(archive.names), set(archive.names) - set(own)
            if strict and (missing or unexpected):
                raise KeyError(
                    f"{path} does not fit {type(self).__name__}: missing keys "
                    f"{describe_names(missing)}; unexpected keys {describe_names(unexpected)}"
                )
            try:
                state = {name: archive.read(name) for name in sorted(set(own) - missing)}
                self.load_state_dict(state, strict=strict)
            except MemoryError:
                for name, p in own.items():
                    p.data = before[name]
                raise CheckpointError(f"{path} is too large to load into memory") from None
        return self

    def __repr__(self) -> str:
        shapes = ", ".join(f"{n}{tuple(p.shape)}" for n, p in self.named_parameters())
        return f"{type(self).__name__}({shapes})"


_checked_classes: set[type] = set()  # each class is looked at once: the warning is per class


def _warn_untrained_tensors(root: Module) -> None:
    """The check behind `parameters()`'s warning. It lives there, not in the cells' steps or
    `Recurrent`, because `parameters()` is where a plain Tensor silently drops out: the
    optimiser is built from it, for every kind of module, once, before training starts."""
    for module in root.modules():
        cls = type(module)
        if cls in _checked_classes:
            continue
        _checked_classes.add(cls)
        found = _untrained_tensor(module)
        if found is not None:
            where, shape = found
            warnings.warn(
                f"{cls.__name__}.{where} is a Tensor {shape}, not a Parameter: it is not in "
                "parameters(), so it would never be trained; wrap it in Parameter(...) (or "
                "keep a constant as a NumPy array)",
                UserWarning,
                stacklevel=3,
            )


def _untrained_tensor(module: Module) -> tuple[str, tuple[int, ...]] | None:
    """(attribute name, shape) of the first float Tensor attribute that is not a Parameter
    and requires no grad, names starting with `_` skipped."""
    for name, value in vars(module).items():
        if name.startswith("_"):
            continue
        items = value if isinstance(value, list | tuple) else (value,)
        for i, item in enumerate(items):
            if (
                isinstance(item, Tensor)
                and not isinstance(item, Parameter)
                and item.dtype.kind == "f"
                and not item.requires_grad
            ):
                return (f"{name}.{i}" if items is value else name), item.shape
    return None


def check_float_input(module: Module, x: Tensor, like: Tensor) -> None:
    """Raise a clear error when a float input's dtype differs from the parameters'."""
    if x.dtype.kind == "f" and x.dtype != like.dtype:
        raise TypeError(
            f"{type(module).__name__}: input dtype {x.dtype} does not match parameter dtype "
            f"{like.dtype}; cast the input or call module.to(np.{x.dtype})"
        )
