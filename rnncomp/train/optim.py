"""Functional optimizers and gradient clipping over flat ``dict[str, np.ndarray]`` params.

Optimizer state is itself a flat dict of named NumPy arrays (``"adam/m/<param>"``,
``"adam/step"``, ...) rather than Python objects, so it can be written by
:mod:`rnncomp.train.checkpoint` as plain arrays and restored without pickling.
``update`` is purely functional: inputs are never mutated, new dicts and new
arrays are returned, which makes it safe to keep the previous step around (for
example to roll back after a NaN loss).  The validation and that bookkeeping are
written once; :class:`SGD` and :class:`Adam` state only their hyperparameters,
their per-parameter state slots and the update of one parameter.

Arithmetic is done in each parameter's own dtype, so float32 parameters and
their state stay float32.  Hyperparameters are plain Python floats, which
NumPy (NEP 50) treats as weak scalars that do not upcast float32 arrays.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

__all__ = [
    "SGD",
    "Adam",
    "Optimizer",
    "clip_by_global_norm",
    "clip_by_value",
    "from_config",
    "global_norm",
]

Params = dict[str, np.ndarray]


def _arr(x: Any, dtype: np.dtype) -> np.ndarray:
    """Arithmetic on 0-d arrays yields NumPy scalars; keep everything an ndarray of ``dtype``."""
    return np.asarray(x, dtype=dtype)


def _check_params(params: Mapping[str, np.ndarray]) -> None:
    """Optimizers only update real floating arrays; catch ints/objects early with a name."""
    for name, p in params.items():
        if not isinstance(name, str):
            raise TypeError(f"parameter names must be str, got {name!r}")
        if not isinstance(p, np.ndarray):
            raise TypeError(f"parameter {name!r} must be a numpy.ndarray, got {type(p).__name__}")
        if not np.issubdtype(p.dtype, np.floating):
            raise ValueError(f"parameter {name!r} must have a floating dtype, got {p.dtype}")


def _check_grads(params: Mapping[str, np.ndarray], grads: Mapping[str, np.ndarray]) -> None:
    """Gradients must match parameters one to one in name, shape and dtype.

    A silent broadcast or dtype promotion here would corrupt training without
    an error, so mismatches raise naming the parameter, expected and received.
    """
    missing = [n for n in params if n not in grads]
    if missing:
        raise ValueError(f"gradients missing for parameter(s): {', '.join(map(repr, missing))}")
    extra = [n for n in grads if n not in params]
    if extra:
        raise ValueError(f"gradients given for unknown parameter(s): {', '.join(map(repr, extra))}")
    for name, p in params.items():
        g = grads[name]
        g_shape = getattr(g, "shape", None)
        g_dtype = getattr(g, "dtype", None)
        if not isinstance(g, np.ndarray) or g_shape != p.shape:
            raise ValueError(
                f"gradient for parameter {name!r} has wrong shape: expected {p.shape}, "
                f"received {g_shape if isinstance(g, np.ndarray) else type(g).__name__}"
            )
        if g_dtype != p.dtype:
            raise ValueError(
                f"gradient for parameter {name!r} has wrong dtype: expected {p.dtype}, "
                f"received {g_dtype}"
            )


def _check_state(state: Mapping[str, np.ndarray], required: list[tuple[str, np.ndarray]]) -> None:
    """State must contain each slot with the shape/dtype of its parameter (e.g. after a reload)."""
    for key, like in required:
        if key not in state:
            raise ValueError(
                f"optimizer state is missing {key!r} (was it created by this optimizer's init()?)"
            )
        s = state[key]
        if not isinstance(s, np.ndarray) or s.shape != like.shape or s.dtype != like.dtype:
            got = (s.shape, s.dtype) if isinstance(s, np.ndarray) else type(s).__name__
            raise ValueError(
                f"optimizer state {key!r} does not match its parameter: expected shape "
                f"{like.shape} dtype {like.dtype}, received {got}"
            )


def _step_of(state: Mapping[str, np.ndarray], key: str) -> int:
    """Read the 0-d int64 step counter, accepting only an integer array."""
    if key not in state:
        raise ValueError(f"optimizer state is missing {key!r}")
    s = np.asarray(state[key])
    if s.shape != () or not np.issubdtype(s.dtype, np.integer):
        raise ValueError(
            f"optimizer state {key!r} must be a 0-d integer array, got shape {s.shape} "
            f"dtype {s.dtype}"
        )
    return int(s)


class Optimizer:
    """Common interface: ``init``, functional ``update``/``step`` and JSON ``config``."""

    name: str = ""

    def init(self, params: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Create zeroed state for ``params``."""
        raise NotImplementedError

    def update(
        self,
        params: Mapping[str, np.ndarray],
        grads: Mapping[str, np.ndarray],
        state: Mapping[str, np.ndarray],
    ) -> tuple[Params, dict[str, np.ndarray]]:
        """Return ``(new_params, new_state)`` without mutating the inputs."""
        raise NotImplementedError

    def step(
        self,
        params: Mapping[str, np.ndarray],
        grads: Mapping[str, np.ndarray],
        state: Mapping[str, np.ndarray],
    ) -> tuple[Params, dict[str, np.ndarray]]:
        """Alias of :meth:`update` for training loops that read better with ``step``."""
        return self.update(params, grads, state)

    def config(self) -> dict[str, Any]:
        """JSON-serialisable hyperparameters (including ``"name"``) for checkpoints."""
        raise NotImplementedError

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.config().items() if k != "name")
        return f"{type(self).__name__}({args})"

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and other.config() == self.config()

    def __hash__(self) -> int:
        return hash(tuple(sorted(self.config().items())))


def _check_lr(owner: str, lr: float) -> None:
    if not (isinstance(lr, (int, float)) and lr >= 0.0 and math.isfinite(lr)):
        raise ValueError(f"{owner} lr must be a finite float >= 0, got {lr!r}")


class _SlotOptimizer(Optimizer):
    """``init``/``update``/``config`` written once for optimizers that are a record.

    A subclass states only what differs: ``name`` (the state-key prefix),
    ``_hyperparameters`` (the ``config`` keys, in constructor order),
    ``_slot_names()`` (per-parameter state arrays, kept under
    ``"<name>/<slot>/<param>"`` next to the 0-d int64 ``"<name>/step"``) and
    ``_rule`` (one parameter's update).  The validation, purity and key layout
    then cannot drift apart between optimizers.  Kept apart from
    :class:`Optimizer` so that the public base class stays abstract.
    """

    _hyperparameters: tuple[str, ...] = ()

    def _slot_names(self) -> tuple[str, ...]:
        raise NotImplementedError

    def _rule(
        self, p: np.ndarray, g: np.ndarray, slots: tuple[np.ndarray, ...], t: int
    ) -> tuple[np.ndarray, tuple[np.ndarray, ...]]:
        """``(new_p, new_slots)`` for one parameter at step ``t`` (1 on the first update)."""
        raise NotImplementedError

    def _slot_keys(self, name: str) -> list[str]:
        return [f"{self.name}/{slot}/{name}" for slot in self._slot_names()]

    def init(self, params: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Zeroed slots for every parameter (see the class docstring) and ``step = 0``."""
        _check_params(params)
        state: dict[str, np.ndarray] = {f"{self.name}/step": np.array(0, dtype=np.int64)}
        for name, p in params.items():
            for key in self._slot_keys(name):
                state[key] = np.zeros_like(p)
        return state

    def update(
        self,
        params: Mapping[str, np.ndarray],
        grads: Mapping[str, np.ndarray],
        state: Mapping[str, np.ndarray],
    ) -> tuple[Params, dict[str, np.ndarray]]:
        """One step; see the class docstring for the formula."""
        _check_params(params)
        _check_grads(params, grads)
        t = _step_of(state, f"{self.name}/step") + 1
        _check_state(state, [(k, p) for name, p in params.items() for k in self._slot_keys(name)])
        new_params: Params = {}
        new_state: dict[str, np.ndarray] = dict(state)
        for name, p in params.items():
            keys = self._slot_keys(name)
            new_params[name], slots = self._rule(p, grads[name], tuple(state[k] for k in keys), t)
            new_state.update(zip(keys, slots))
        new_state[f"{self.name}/step"] = np.array(t, dtype=np.int64)
        return new_params, new_state

    def config(self) -> dict[str, Any]:
        """Hyperparameters as a JSON-able dict."""
        return {"name": self.name, **{k: getattr(self, k) for k in self._hyperparameters}}


class SGD(_SlotOptimizer):
    """Stochastic gradient descent with optional (Nesterov) momentum.

    Same update as TF1 ``MomentumOptimizer`` and ``torch.optim.SGD`` with
    ``dampening=0``::

        buf = momentum * buf + g
        p  -= lr * buf                      # classical
        p  -= lr * (g + momentum * buf)     # nesterov=True

    State: ``"sgd/step"`` (0-d int64) and, when ``momentum > 0``,
    ``"sgd/momentum/<param>"``.
    """

    name = "sgd"
    _hyperparameters = ("lr", "momentum", "nesterov")

    def __init__(self, lr: float, momentum: float = 0.0, nesterov: bool = False) -> None:
        _check_lr("SGD", lr)
        if not (momentum >= 0.0 and math.isfinite(momentum)):
            raise ValueError(f"SGD momentum must be a finite float >= 0, got {momentum!r}")
        if nesterov and momentum <= 0.0:
            raise ValueError("SGD nesterov=True requires momentum > 0")
        self.lr = float(lr)
        self.momentum = float(momentum)
        self.nesterov = bool(nesterov)

    def _slot_names(self) -> tuple[str, ...]:
        return ("momentum",) if self.momentum > 0.0 else ()

    def _rule(self, p, g, slots, t):
        if not slots:
            return _arr(p - self.lr * g, p.dtype), ()
        buf = _arr(self.momentum * slots[0] + g, p.dtype)
        d = g + self.momentum * buf if self.nesterov else buf
        return _arr(p - self.lr * d, p.dtype), (buf,)


class Adam(_SlotOptimizer):
    """Adam (Kingma & Ba 2015) with bias correction.

    Epsilon placement follows PyTorch / the paper's Algorithm 1, *not* TF1's
    ``AdamOptimizer`` (which adds ``eps`` to ``sqrt(v)`` before bias-correcting,
    i.e. an effective ``eps * sqrt(1 - beta2**t)``)::

        t     += 1
        m      = beta1 * m + (1 - beta1) * g
        v      = beta2 * v + (1 - beta2) * g**2
        m_hat  = m / (1 - beta1**t)
        v_hat  = v / (1 - beta2**t)
        p     -= lr * m_hat / (sqrt(v_hat) + eps)

    State: ``"adam/step"`` (0-d int64), ``"adam/m/<param>"``, ``"adam/v/<param>"``.
    """

    name = "adam"
    _hyperparameters = ("lr", "beta1", "beta2", "eps")

    def __init__(
        self, lr: float = 0.001, beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-8
    ) -> None:
        _check_lr("Adam", lr)
        for label, b in (("beta1", beta1), ("beta2", beta2)):
            if not 0.0 <= b < 1.0:
                raise ValueError(f"Adam {label} must be in [0, 1), got {b!r}")
        if not eps >= 0.0:
            raise ValueError(f"Adam eps must be >= 0, got {eps!r}")
        self.lr = float(lr)
        self.beta1 = float(beta1)
        self.beta2 = float(beta2)
        self.eps = float(eps)

    def _slot_names(self) -> tuple[str, ...]:
        return ("m", "v")

    def _rule(self, p, g, slots, t):
        m, v = slots
        m = _arr(self.beta1 * m + (1.0 - self.beta1) * g, p.dtype)
        v = _arr(self.beta2 * v + (1.0 - self.beta2) * (g * g), p.dtype)
        m_hat = m / (1.0 - self.beta1**t)
        v_hat = v / (1.0 - self.beta2**t)
        return _arr(p - self.lr * m_hat / (np.sqrt(v_hat) + self.eps), p.dtype), (m, v)


_OPTIMIZERS: dict[str, type[Optimizer]] = {cls.name: cls for cls in (SGD, Adam)}


def from_config(config: Mapping[str, Any]) -> Optimizer:
    """Rebuild an optimizer from :meth:`Optimizer.config` output (e.g. read from a checkpoint)."""
    if not isinstance(config, Mapping) or "name" not in config:
        raise ValueError(f"optimizer config must be a dict with a 'name' key, got {config!r}")
    name = str(config["name"]).lower()
    if name not in _OPTIMIZERS:
        raise ValueError(
            f"unknown optimizer {config['name']!r}; valid names are: {', '.join(sorted(_OPTIMIZERS))}"
        )
    kwargs = {k: v for k, v in config.items() if k != "name"}
    try:
        return _OPTIMIZERS[name](**kwargs)
    except TypeError as exc:
        raise ValueError(f"invalid config for optimizer {name!r}: {exc}") from exc


def _check_grad_dict(grads: Mapping[str, np.ndarray]) -> None:
    for name, g in grads.items():
        if not isinstance(g, np.ndarray):
            raise TypeError(f"gradient {name!r} must be a numpy.ndarray, got {type(g).__name__}")
        if not np.issubdtype(g.dtype, np.floating):
            raise ValueError(f"gradient {name!r} must have a floating dtype, got {g.dtype}")


def clip_by_value(grads: Mapping[str, np.ndarray], lo: float, hi: float) -> dict[str, np.ndarray]:
    """Clip every gradient element into ``[lo, hi]`` (TF ``clip_by_value``); dtypes kept."""
    if not lo <= hi:
        raise ValueError(f"clip_by_value needs lo <= hi, got lo={lo}, hi={hi}")
    _check_grad_dict(grads)
    return {name: _arr(np.clip(g, lo, hi), g.dtype) for name, g in grads.items()}


def global_norm(grads: Mapping[str, np.ndarray]) -> float:
    """``sqrt(sum of squares of every element of every gradient)``.

    Accumulated in float64 so that float32 gradients with large entries do
    not overflow to inf before the square root.
    """
    _check_grad_dict(grads)
    total = 0.0
    for g in grads.values():
        g64 = g.astype(np.float64, copy=False)
        total += float(np.vdot(g64.ravel(), g64.ravel()))
    return math.sqrt(total)


def clip_by_global_norm(
    grads: Mapping[str, np.ndarray], max_norm: float
) -> tuple[dict[str, np.ndarray], float]:
    """Jointly rescale gradients so their global norm is at most ``max_norm``.

    TF1 ``tf.clip_by_global_norm`` semantics:
    ``g * max_norm / max(global_norm, max_norm)``, returning ``(clipped,
    global_norm)`` where ``global_norm`` is the norm *before* clipping.  As in
    TF, a non-finite global norm (any NaN, or Inf) is not hidden: every clipped
    gradient becomes NaN, so the divergence shows up in the parameters instead
    of being silently skipped.
    """
    if not (max_norm > 0.0):
        raise ValueError(f"clip_by_global_norm needs max_norm > 0, got {max_norm}")
    norm = global_norm(grads)
    if math.isinf(max_norm):  # no limit: nothing to rescale (inf / inf would be NaN)
        return {name: _arr(g, g.dtype) for name, g in grads.items()}, norm
    if math.isfinite(norm):
        scale = max_norm / max(norm, max_norm)
    else:
        scale = math.nan
    clipped = {
        name: _arr(g * np.asarray(scale, dtype=g.dtype), g.dtype) for name, g in grads.items()
    }
    return clipped, norm
