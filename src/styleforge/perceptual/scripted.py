"""Run a TorchScript module's graph op by op in eager PyTorch, with its frozen 3x3 convolutions on our fast path.

NVIDIA's ``vgg16.pt`` (the projector's and PPL's perceptual network) is a TorchScript file. The TorchScript
runtime calls oneDNN for every convolution; in eager mode the same graph can use styleforge's CPU
convolution (:func:`styleforge.networks.ops.conv2d_resample`: Winograd F(2x2, 3x3) for the 16-128 px layers
with >= 128 channels, kernels kept in the activations' memory format), which makes VGG16's forward and
input-gradient passes ~20 % faster on two cores. Nothing here knows VGG16: :class:`EagerScript` walks the
module's inlined graph (``prim::If`` / ``prim::Loop`` blocks, constants, attributes, lists and tuples), calls
each ``aten`` operator through ``torch.ops.aten`` with the overload the graph names, and evaluates the
scalar/list operators TorchScript uses for control flow in Python. Anything else raises
:class:`UnsupportedGraph`.

The result is only trusted after checking it: :func:`eager_or_script` runs both the eager walk and the
TorchScript module on a probe input and keeps the eager one only when their outputs (and input gradients)
agree to float rounding; otherwise, or when a later call reaches an operator the walker does not know, the
TorchScript module is used as shipped. Loading a TorchScript file already runs its code (see the security
note in :mod:`styleforge.perceptual.features`); this walker runs the same graph and adds no new capability.
"""

from __future__ import annotations

import operator
import warnings
from typing import Any, Callable, Dict, List, Optional, Sequence

import torch
from torch import nn

from ..networks import ops

__all__ = ["EagerScript", "UnsupportedGraph", "eager_or_script", "ScriptWithFallback"]


class UnsupportedGraph(RuntimeError):
    """The graph uses a construct the eager walker does not implement (the caller falls back)."""


class _GraphRaised(RuntimeError):
    """A ``prim::RaiseException`` node was reached (the TorchScript module would raise here too)."""


# TorchScript passes dtypes as ScalarType integers (c10/core/ScalarType.h order).
_SCALAR_TYPES = {
    0: torch.uint8, 1: torch.int8, 2: torch.int16, 3: torch.int32, 4: torch.int64, 5: torch.float16,
    6: torch.float32, 7: torch.float64, 11: torch.bool, 15: torch.bfloat16,
}
_SCALAR_TYPE_CODES = {dtype: code for code, dtype in _SCALAR_TYPES.items()}

# Operators on Python scalars, lists and strings (TorchScript control-flow helpers), by name without overload.
_PY_OPS: Dict[str, Callable] = {
    "add": operator.add, "sub": operator.sub, "mul": operator.mul, "div": operator.truediv,
    "floordiv": operator.floordiv, "remainder": operator.mod, "neg": operator.neg,
    "eq": operator.eq, "ne": operator.ne, "lt": operator.lt, "le": operator.le, "gt": operator.gt,
    "ge": operator.ge, "__and__": operator.and_, "__or__": operator.or_, "__not__": operator.not_,
    "__is__": operator.is_, "__isnot__": operator.is_not, "__contains__": operator.contains,
    "__getitem__": operator.getitem, "len": len, "Int": int, "Float": float, "Bool": bool, "str": str,
    "abs": abs, "min": min, "max": max, "pow": lambda a, b: float(a ** b), "floor": lambda v: int(v // 1), "ceil": lambda v: int(-(-v // 1)),
    "format": lambda fmt, *a: fmt.format(*a), "list": list,
}


# ...of which these apply to lists, tuples, strings and None even when the elements are tensors.
_STRUCTURAL = {"__is__", "__isnot__", "__contains__", "__getitem__", "len", "format", "list"}


def _is_tensor_free(values: Sequence[Any]) -> bool:
    def has_tensor(v):
        if torch.is_tensor(v):
            return True
        if isinstance(v, (list, tuple)):
            return any(has_tensor(e) for e in v)
        return False

    return not any(has_tensor(v) for v in values)


class EagerScript(nn.Module):
    """Calls a scripted module's ``forward`` graph node by node in eager mode (see the module docstring).

    ``conv_fast_path``: 3x3 stride-1 pad-1 convolutions with frozen kernels go through
    :func:`styleforge.networks.ops.conv2d_resample` (set False to call the graph's own operator everywhere).
    """

    def __init__(self, script: torch.jit.ScriptModule, conv_fast_path: bool = True):
        super().__init__()
        if not isinstance(script, torch.jit.ScriptModule):
            raise UnsupportedGraph(f"not a TorchScript module: {type(script).__name__}")
        self.script = script
        self.conv_fast_path = conv_fast_path
        self._graph = script.inlined_graph
        self._schema = script.forward.schema
        self._nodes = list(self._graph.nodes())
        self._free_after = self._last_uses()
        self._layouts: Dict[int, ops.WeightLayouts] = {}
        self._constants: Dict[int, Any] = {}
        self._op_cache: Dict[str, Any] = {}

    # -- calling ---------------------------------------------------------------------------------------
    def forward(self, *args, **kwargs):
        params = list(self._schema.arguments)[1:]  # without self
        if len(args) > len(params):
            raise TypeError(f"forward() takes {len(params)} arguments, got {len(args)}")
        values = list(args)
        for p in params[len(args):]:
            if p.name in kwargs:
                values.append(kwargs.pop(p.name))
            elif p.has_default_value():
                values.append(p.default_value)
            else:
                raise TypeError(f"forward() missing argument {p.name!r}")
        if kwargs:
            raise TypeError(f"forward() got unexpected arguments {sorted(kwargs)}")
        inputs = list(self._graph.inputs())
        env: Dict[Any, Any] = {inputs[0].unique(): self.script}
        for v, value in zip(inputs[1:], values):
            env[v.unique()] = value
        self._run(self._nodes, env, self._free_after)
        outs = [env[v.unique()] for v in self._graph.outputs()]
        return outs[0] if len(outs) == 1 else tuple(outs)

    # -- graph walking ---------------------------------------------------------------------------------
    def _last_uses(self) -> List[List[int]]:
        """For each top-level node, the values no later node reads: dropped from the walk's environment once
        the node has run, so intermediates that backward does not need are freed as early as in the
        TorchScript runtime (otherwise the walk holds every activation until forward returns)."""

        def reads(node):
            for v in node.inputs():
                yield v.unique()
            for block in node.blocks():
                for inner in block.nodes():
                    yield from reads(inner)
                for v in block.outputs():
                    yield v.unique()

        last: Dict[int, int] = {}
        for i, node in enumerate(self._nodes):
            for key in reads(node):
                last[key] = i
        keep = {v.unique() for v in self._graph.outputs()} | {next(self._graph.inputs()).unique()}
        free: List[List[int]] = [[] for _ in self._nodes]
        for key, i in last.items():
            if key not in keep:
                free[i].append(key)
        return free

    def _run(self, nodes, env: Dict[Any, Any], free_after: Optional[List[List[int]]] = None) -> None:
        for i, node in enumerate(nodes):
            if free_after is not None and i > 0:
                for key in free_after[i - 1]:
                    env.pop(key, None)
            kind = node.kind()
            ins = [env[v.unique()] for v in node.inputs()]
            outs = list(node.outputs())
            if kind == "prim::Constant":
                key = outs[0].unique()
                if key not in self._constants:
                    self._constants[key] = self._constant(node)
                env[key] = self._constants[key]
            elif kind == "prim::GetAttr":
                env[outs[0].unique()] = getattr(ins[0], node.s("name"))
            elif kind == "prim::If":
                block = list(node.blocks())[0 if ins[0] else 1]
                self._run(block.nodes(), env)
                for o, r in zip(outs, block.outputs()):
                    env[o.unique()] = env[r.unique()]
            elif kind == "prim::Loop":
                self._loop(node, ins, outs, env)
            else:
                results = self._call(node, kind, ins)
                if len(outs) == 1 and kind not in ("prim::ListUnpack", "prim::TupleUnpack"):
                    env[outs[0].unique()] = results
                elif outs:
                    if len(results) != len(outs):
                        raise UnsupportedGraph(f"{kind}: {len(results)} values for {len(outs)} outputs")
                    for o, r in zip(outs, results):
                        env[o.unique()] = r

    def _loop(self, node, ins, outs, env) -> None:
        max_trips, cond, carried = ins[0], ins[1], list(ins[2:])
        block = list(node.blocks())[0]
        block_in = list(block.inputs())
        i = 0
        while cond and i < max_trips:
            env[block_in[0].unique()] = i
            for v, value in zip(block_in[1:], carried):
                env[v.unique()] = value
            self._run(block.nodes(), env)
            res = [env[v.unique()] for v in block.outputs()]
            cond, carried = res[0], res[1:]
            i += 1
        for o, value in zip(outs, carried):
            env[o.unique()] = value

    @staticmethod
    def _constant(node):
        out = node.output()
        if not node.attributeNames():
            return None
        if str(out.type()).startswith("__torch__") or "Function" in str(out.type()):
            return _Opaque(str(out.type()))
        if node.kindOf("value") == "t":
            return node.t("value")
        return out.toIValue()

    def _call(self, node, kind: str, ins: List[Any]):
        if kind in ("prim::ListConstruct",):
            return list(ins)
        if kind == "prim::TupleConstruct":
            return tuple(ins)
        if kind in ("prim::ListUnpack", "prim::TupleUnpack"):
            return list(ins[0])
        if kind == "prim::TupleIndex":
            return ins[0][ins[1]]
        if kind == "prim::RaiseException":
            raise _GraphRaised(str(ins[0]) if ins else "exception in TorchScript graph")
        if kind == "prim::Uninitialized":
            return None
        if kind in ("prim::unchecked_cast", "aten::detach") and not torch.is_tensor(ins[0]):
            return ins[0]
        if kind == "prim::unchecked_cast":
            return ins[0]
        if kind == "prim::device":
            return ins[0].device
        if kind == "prim::dtype":  # TorchScript's dtypes are ScalarType codes (compared with int constants)
            if ins[0].dtype not in _SCALAR_TYPE_CODES:
                raise UnsupportedGraph(f"dtype {ins[0].dtype}")
            return _SCALAR_TYPE_CODES[ins[0].dtype]
        if kind == "prim::NumToTensor":  # as c10::scalar_to_tensor: bool, int64 or float64
            v = ins[0]
            dtype = torch.bool if isinstance(v, bool) else torch.int64 if isinstance(v, int) else torch.float64
            return torch.tensor(v, dtype=dtype)
        if kind in ("prim::min", "prim::max"):
            fn = min if kind == "prim::min" else max
            return fn(ins[0]) if len(ins) == 1 else fn(*ins)
        if kind in ("aten::warn",):
            return None
        if kind == "aten::append":
            ins[0].append(ins[1])
            return ins[0]
        if not kind.startswith("aten::"):
            raise UnsupportedGraph(f"TorchScript node {kind}")
        name = kind[len("aten::"):]
        if kind in ("aten::conv2d", "aten::_convolution", "aten::convolution") and self.conv_fast_path:
            y = self._fast_conv(node, name, ins)
            if y is not None:
                return y
        if name in _PY_OPS and (name in _STRUCTURAL or _is_tensor_free(ins)):
            try:
                return _PY_OPS[name](*ins)
            except (TypeError, IndexError, KeyError) as e:
                raise UnsupportedGraph(f"{kind} on {[type(v).__name__ for v in ins]}: {e}") from None
        return self._aten(node, kind, ins)

    def _aten(self, node, kind: str, ins: List[Any]):
        key = node.schema()
        if key == "(no schema)":
            raise UnsupportedGraph(f"{kind} without a schema")
        entry = self._op_cache.get(key)
        if entry is None:
            schema = torch._C.parse_schema(key)
            packet = getattr(torch.ops.aten, schema.name.split("::", 1)[1], None)
            if packet is None:
                raise UnsupportedGraph(f"operator {schema.name}")
            op = getattr(packet, schema.overload_name or "default", None)
            if op is None:
                raise UnsupportedGraph(f"operator {schema.name}.{schema.overload_name}")
            names = [(a.name, a.kwarg_only, str(a.type)) for a in schema.arguments]
            entry = self._op_cache[key] = (op, names)
        op, names = entry
        args, kwargs = [], {}
        for (aname, kwarg_only, atype), value in zip(names, ins):
            if isinstance(value, int) and not isinstance(value, bool) and "ScalarType" in atype:
                value = _SCALAR_TYPES.get(value, value)
            if kwarg_only:
                kwargs[aname] = value
            else:
                args.append(value)
        try:
            return op(*args, **kwargs)
        except (RuntimeError, TypeError) as e:
            if not _is_tensor_free(ins):
                raise
            raise UnsupportedGraph(f"{kind}: {e}".splitlines()[0]) from None

    def _fast_conv(self, node, name: str, ins: List[Any]) -> Optional[torch.Tensor]:
        x, w, b = ins[0], ins[1], ins[2]
        stride, padding, dilation = list(ins[3]), list(ins[4]), list(ins[5])
        if name == "conv2d":
            transposed, groups = False, ins[6]
        else:
            transposed, groups = bool(ins[6]), ins[8]
        if not (torch.is_tensor(x) and torch.is_tensor(w) and x.ndim == 4 and w.ndim == 4) or transposed:
            return None
        if (groups != 1 or tuple(w.shape[2:]) != (3, 3) or stride != [1, 1] or padding != [1, 1]
                or dilation != [1, 1] or w.requires_grad or (b is not None and b.requires_grad)):
            return None
        key = node.output().unique()  # (a node's Python wrapper is new on every walk; its value ids are stable)
        layouts = self._layouts.setdefault(key, ops.WeightLayouts())
        return ops.conv2d_resample(x, w, padding=1, layouts=layouts, bias=b)


class _Opaque:
    """A constant the walker never evaluates (a function or class object in the graph)."""

    def __init__(self, what: str):
        self.what = what

    def __repr__(self) -> str:
        return f"<TorchScript {self.what}>"


class ScriptWithFallback(nn.Module):
    """Calls the eager walk; if the walk fails (a construct it does not support, or any other error), switches
    to the TorchScript module for good (with one warning) and repeats the call there."""

    def __init__(self, script: torch.jit.ScriptModule, eager: Optional[EagerScript], reason: Optional[str] = None):
        super().__init__()
        self.script = script
        self.eager = eager
        self.reason = reason  # why the TorchScript module runs as shipped (None while the eager walk is used)

    @property
    def uses_eager(self) -> bool:
        return self.eager is not None

    def forward(self, *args, **kwargs):
        if self.eager is not None:
            try:
                return self.eager(*args, **kwargs)
            except Exception as e:  # (a real input error is raised again by the TorchScript module below)
                self.reason = f"{type(e).__name__}: {e}".splitlines()[0]
                self.eager = None
                warnings.warn(f"TorchScript graph runs as shipped from now on ({self.reason})", RuntimeWarning)
        return self.script(*args, **kwargs)


def eager_or_script(script: torch.jit.ScriptModule, example: torch.Tensor,
                    call: Callable[[nn.Module, torch.Tensor], torch.Tensor] = lambda m, x: m(x),
                    rtol: float = 1e-4) -> ScriptWithFallback:
    """Wrap ``script`` so that calls take the eager walk if, on ``example``, ``call(module, x)`` gives the
    same output through the walk as through ``script``, and the same gradient of a fixed random projection
    of it with respect to ``x`` (max abs difference <= rtol x max abs value); otherwise calls go to ``script`` itself.
    The reason for a fallback is kept in ``.reason``."""
    try:
        eager = EagerScript(script)
        got = _output_and_grad(eager, example, call)
    except Exception as e:  # whatever the walk cannot do, the TorchScript runtime does as shipped
        return ScriptWithFallback(script, None, reason=f"{type(e).__name__}: {e}".splitlines()[0])
    ref = _output_and_grad(script, example, call)
    for a, b in zip(ref, got):
        if a.shape != b.shape or a.dtype != b.dtype or not _close(a, b, rtol):
            return ScriptWithFallback(script, None, reason="the eager walk differs from the TorchScript module")
    return ScriptWithFallback(script, eager)


def _output_and_grad(module, example, call):
    x = example.detach().clone().requires_grad_(example.is_floating_point())
    with torch.enable_grad():
        out = call(module, x)
        if not (x.requires_grad and out.requires_grad):
            return out.detach(), torch.zeros(())
        # a fixed random projection (a sum of squares would be constant for unit-normalised features)
        proj = torch.randn(out.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
        (grad,) = torch.autograd.grad((out.double() * proj.to(out.device)).sum(), [x])
    return out.detach(), grad


def _close(a: torch.Tensor, b: torch.Tensor, rtol: float) -> bool:
    a, b = a.double(), b.double()
    scale = max(a.abs().max().item(), 1e-12)
    return bool((a - b).abs().max().item() <= rtol * scale)
