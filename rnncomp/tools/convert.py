"""Convert recurrent-layer weights between PyTorch and rnncomp (TF1) layouts.

rnncomp parameters are a flat ``dict[str, np.ndarray]`` laid out like TensorFlow 1
``BasicRNNCell`` / ``BasicLSTMCell`` / ``LSTMCell`` / ``GRUCell`` / ``MultiRNNCell``
variables (see ``docs/parameters.md``).  PyTorch ``nn.RNN`` / ``nn.LSTM`` / ``nn.GRU``
state dicts use ``weight_ih_l{k}``, ``weight_hh_l{k}``, ``bias_ih_l{k}``,
``bias_hh_l{k}``.

Everything here is plain NumPy; nothing imports torch.  State-dict values may be
anything :func:`numpy.asarray` accepts.  For torch tensors the usual idiom is::

    sd = {k: v.detach().cpu().numpy() for k, v in module.state_dict().items()}

(as a convenience, objects that have ``detach``/``cpu``/``numpy`` methods -- i.e.
torch tensors, even ones that require grad or live on a GPU -- are converted that
way automatically).  Going back::

    module.load_state_dict({k: torch.from_numpy(v) for k, v in to_torch_lstm(p).items()})

Conventions
-----------
* dtype is preserved: float32 in -> float32 out, float64 in -> float64 out.  If the
  arrays of one call have different floating dtypes they are promoted with
  :func:`numpy.result_type`.  Non-floating arrays are rejected.
* Outputs are always fresh C-contiguous arrays (never views of the inputs), so
  ``torch.from_numpy`` accepts them.
* A single layer maps to ``"{scope}/{cell}/..."``; several layers map to
  ``"{scope}/multi_rnn_cell/cell_{k}/{cell}/..."``.  Pass ``multi=True`` to get the
  MultiRNNCell layout for a single layer too.
* PyTorch modules built with ``bias=False`` have no bias keys; if *no* bias key is
  present at all the biases are taken as zeros.  If some are present and others
  missing, that is an error.
* Bidirectional modules (``bidirectional=True``: ``*_reverse`` keys) map to
  ``bidirectional_dynamic_rnn`` (one layer: ``"{scope}/fw/{cell}/..."`` and
  ``"{scope}/bw/{cell}/..."``, scope ``"bidirectional_rnn"`` by default) or
  ``stack_bidirectional_dynamic_rnn`` (several layers, or ``multi=True``:
  ``"{scope}/cell_{k}/bidirectional_rnn/{fw,bw}/{cell}/..."``, scope
  ``"stack_bidirectional_rnn"`` by default), whose layer k > 0 reads the concatenated
  [fw, bw] outputs as PyTorch's does.  ``to_torch_*`` recognises both layouts.
* LSTM projection (``weight_hr_l*``, ``proj_size``) state dicts have no TF1-cell
  equivalent and raise :class:`ValueError`.  So do TF parameters that PyTorch cannot
  express (peepholes, reset-before GRU candidate, layers of different widths).

Bias caveats
------------
* PyTorch has two bias vectors that are simply added, TF1 has one.  ``from_torch_*``
  sums them.  ``to_torch_*`` puts the whole TF bias in ``bias_ih`` and zeros in
  ``bias_hh``.  The forward function is identical, and the gradients with respect to
  ``bias_ih`` and ``bias_hh`` are identical anyway (they enter only through their
  sum); only the split of the value, which is not identifiable, is lost.  The GRU
  candidate biases are not summed: ``b_in`` is ``candidate/bias`` and ``b_hn``
  (inside ``r * (...)``) is ``candidate/recurrent_bias``.
* TF1 LSTM cells add ``forget_bias`` (default 1.0) to the forget-gate
  pre-activation at run time, on top of the bias variable.  ``from_torch_lstm``
  therefore stores ``b_ih_f + b_hh_f - forget_bias`` in the f block, and
  ``to_torch_lstm`` adds it back.  The constant ``forget_bias`` is placed in the f
  block of ``bias_hh`` (everything else of ``bias_hh`` is zero), so that the trainable
  TF bias is copied bit-for-bit into ``bias_ih`` and ``from_torch(to_torch(p))``
  reproduces ``p`` exactly.  Use the same ``forget_bias`` in both directions and in
  the cell definition.

Layout tables
-------------
Each cell is one record of ``_CELLS``: its TF variables, each given as the PyTorch gate
blocks it holds (in TF column order) and what they are cut from (the stacked weights,
the summed biases, or one bias alone).  ``_from_torch`` and ``_to_torch`` read that
record in either direction, so the six public functions differ only in their
signatures and docstrings, and validation and error messages are the same code for
every cell.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np

__all__ = [
    "from_torch_lstm",
    "to_torch_lstm",
    "from_torch_gru",
    "to_torch_gru",
    "from_torch_rnn",
    "to_torch_rnn",
]

_TORCH_KEY_RE = re.compile(r"^(weight_ih|weight_hh|bias_ih|bias_hh)_l(\d+)$")


# --------------------------------------------------------------------------- helpers


def _to_numpy(value: Any, name: str) -> np.ndarray:
    """np.asarray with duck-typed support for torch tensors; floating dtypes only."""
    if all(hasattr(value, attr) for attr in ("detach", "cpu", "numpy")):
        value = value.detach().cpu().numpy()
    arr = np.asarray(value)
    if not np.issubdtype(arr.dtype, np.floating):
        raise ValueError(f"{name!r} has dtype {arr.dtype}; expected a floating-point array")
    return arr


def _join(*parts: str) -> str:
    return "/".join(p.strip("/") for p in parts if p and p.strip("/"))


def _layer_scope(scope: str, cell: str, k: int, multi: bool) -> str:
    if multi:
        return _join(scope, "multi_rnn_cell", f"cell_{k}", cell)
    return _join(scope, cell)


def _check_shape(arr: np.ndarray, key: str, expected: tuple[int, ...], what: str, fn: str):
    if tuple(arr.shape) != tuple(expected):
        raise ValueError(
            f"{fn}: {key!r} has shape {tuple(arr.shape)}, expected {tuple(expected)} ({what})"
        )


def _common_dtype(arrays: list[np.ndarray]) -> np.dtype:
    return np.result_type(*[a.dtype for a in arrays])


def _out(arr: np.ndarray, dtype: np.dtype) -> np.ndarray:
    return np.ascontiguousarray(np.array(arr, dtype=dtype, copy=True))


def _reject_unsupported_torch_keys(keys, fn: str) -> None:
    for key in keys:
        if key.startswith("weight_hr"):
            raise ValueError(
                f"{fn}: key {key!r} belongs to an LSTM with proj_size > 0; LSTM "
                f"projections are not supported"
            )


_REVERSE = "_reverse"


def _torch_directions(sd: Mapping[str, Any], prefix: str, fn: str) -> list[Mapping[str, Any]]:
    """[sd] for a unidirectional state dict, [forward keys, reverse keys with the suffix
    removed] for a bidirectional one (both under ``prefix``)."""
    if not isinstance(sd, Mapping):
        raise ValueError(f"{fn}: expected a mapping of parameter name -> array, got {type(sd)}")
    rev = {k[:-len(_REVERSE)]: v for k, v in sd.items()
           if isinstance(k, str) and k.startswith(prefix) and k.endswith(_REVERSE)}
    if not rev:
        return [sd]
    fwd = {k: v for k, v in sd.items()
           if isinstance(k, str) and k.startswith(prefix) and not k.endswith(_REVERSE)}
    return [fwd, rev]


def _read_torch_sd(
    sd: Mapping[str, Any], gates: int, num_layers: int | None, prefix: str, fn: str,
    directions: int = 1,
) -> tuple[list[dict[str, np.ndarray]], np.dtype]:
    """Validate a torch state dict and return per-layer arrays (with zero biases filled in).

    Returns ``(layers, dtype)``; each layer dict has keys ``w_ih`` [G*H, I_k],
    ``w_hh`` [G*H, H], ``b_ih`` [G*H], ``b_hh`` [G*H].
    """
    if not isinstance(sd, Mapping):
        raise ValueError(f"{fn}: expected a mapping of parameter name -> array, got {type(sd)}")
    local = {}
    for key, value in sd.items():
        if not isinstance(key, str) or not key.startswith(prefix):
            continue
        local[key[len(prefix):]] = (key, value)
    _reject_unsupported_torch_keys(local, fn)

    layer_ids = set()
    has_bias = False
    for name, (full, _) in local.items():
        m = _TORCH_KEY_RE.match(name)
        if m is None:
            raise ValueError(
                f"{fn}: unexpected key {full!r}; expected only weight_ih_l<k>, weight_hh_l<k>, "
                f"bias_ih_l<k>, bias_hh_l<k>"
                + (f" after the prefix {prefix!r}" if prefix else "")
            )
        layer_ids.add(int(m.group(2)))
        has_bias = has_bias or m.group(1).startswith("bias")

    if num_layers is None:
        if not layer_ids:
            raise ValueError(
                f"{fn}: missing key {prefix + 'weight_ih_l0'!r} (no recurrent-layer "
                f"parameters found; expected weight_ih_l0 of shape [{gates}*H, I])"
            )
        num_layers = max(layer_ids) + 1
    else:
        num_layers = int(num_layers)
        if num_layers < 1:
            raise ValueError(f"{fn}: num_layers must be >= 1, got {num_layers}")
        extra = sorted(k for k in layer_ids if k >= num_layers)
        if extra:
            raise ValueError(
                f"{fn}: state dict has parameters for layer {extra[0]} but num_layers="
                f"{num_layers}"
            )

    def get(name: str, expected_desc: str):
        if name not in local:
            raise ValueError(
                f"{fn}: missing key {prefix + name!r} (expected {expected_desc})"
            )
        full, value = local[name]
        return full, _to_numpy(value, full)

    g = gates
    layers = []
    hidden = None
    for k in range(num_layers):
        where = f"layer {k} of {num_layers}"
        # weight_hh determines H.
        exp_hh = f" = {[g * hidden, hidden]}" if hidden is not None else ""
        k_hh, w_hh = get(f"weight_hh_l{k}", f"an array of shape [{g}*H, H]{exp_hh} for {where}")
        if w_hh.ndim != 2 or w_hh.shape[0] != g * w_hh.shape[1] or w_hh.shape[1] == 0:
            exp = f"{(g * w_hh.shape[1], w_hh.shape[1])} " if w_hh.ndim == 2 else ""
            raise ValueError(
                f"{fn}: {k_hh!r} has shape {tuple(w_hh.shape)}, expected {exp}"
                f"([{g}*hidden_size, hidden_size])"
            )
        h = w_hh.shape[1]
        if hidden is None:
            hidden = h
        elif h != hidden:
            raise ValueError(
                f"{fn}: inconsistent layer sizes: {k_hh!r} has shape {tuple(w_hh.shape)} "
                f"(hidden_size {h}), but layer 0 has hidden_size {hidden}; expected "
                f"{(g * hidden, hidden)}"
            )
        k_ih, w_ih = get(f"weight_ih_l{k}", f"an array of shape [{g}*H, I] = [{g * h}, I] "
                         f"for {where}")
        if w_ih.ndim != 2 or w_ih.shape[0] != g * h or w_ih.shape[1] == 0:
            exp_i = w_ih.shape[1] if w_ih.ndim == 2 and w_ih.shape[1] else "input_size"
            raise ValueError(
                f"{fn}: {k_ih!r} has shape {tuple(w_ih.shape)}, expected "
                f"({g * h}, {exp_i}) ([{g}*hidden_size, input_size], hidden_size {h} "
                f"from {k_hh!r})"
            )
        if k > 0 and w_ih.shape[1] != directions * hidden:
            raise ValueError(
                f"{fn}: inconsistent layer sizes: {k_ih!r} has shape {tuple(w_ih.shape)}, "
                f"expected {(g * h, directions * hidden)} (layer {k} input size must equal "
                f"the {'2 * ' if directions == 2 else ''}hidden_size {hidden} of layer {k - 1})"
            )
        biases = {}
        for bname in ("bias_ih", "bias_hh"):
            key = f"{bname}_l{k}"
            if has_bias:
                full_b, b = get(key, f"an array of shape [{g}*H] = [{g * h}] for {where}")
                _check_shape(b, full_b, (g * h,), f"[{g}*hidden_size]", fn)
            else:
                b = None
            biases[bname] = b
        layers.append({"w_ih": w_ih, "w_hh": w_hh, **biases})

    arrays = [a for layer in layers for a in layer.values() if a is not None]
    dtype = _common_dtype(arrays)
    for layer in layers:
        for bname in ("bias_ih", "bias_hh"):
            if layer[bname] is None:
                layer[bname] = np.zeros(layer["w_hh"].shape[0], dtype=dtype)
        layer["b_ih"] = layer.pop("bias_ih")
        layer["b_hh"] = layer.pop("bias_hh")
    return layers, dtype


def _find_tf_layers(
    params: Mapping[str, Any], scope: str, cell: str, fn: str
) -> tuple[list[str], bool]:
    """Return the list of per-layer cell scopes present in ``params`` and whether multi."""
    if not isinstance(params, Mapping):
        raise ValueError(f"{fn}: expected a mapping of parameter name -> array, got {type(params)}")
    probe = "gates/kernel" if "gru" in cell else "kernel"  # only for error messages
    single = _layer_scope(scope, cell, 0, multi=False)
    multi0 = _layer_scope(scope, cell, 0, multi=True)
    has_single = any(k.startswith(single + "/") for k in params)
    has_multi = any(k.startswith(multi0 + "/") for k in params)
    if has_single and has_multi:
        raise ValueError(
            f"{fn}: both {single + '/...'!r} and {multi0 + '/...'!r} are present; "
            f"cannot tell whether scope {scope!r} is a single cell or a MultiRNNCell"
        )
    if has_single:
        return [single], False
    if has_multi:
        scopes = []
        k = 0
        while any(key.startswith(_layer_scope(scope, cell, k, True) + "/") for key in params):
            scopes.append(_layer_scope(scope, cell, k, True))
            k += 1
        # A gap (cell_0, cell_2) means a missing layer.
        mprefix = _join(scope, "multi_rnn_cell") + "/cell_"
        for key in params:
            if key.startswith(mprefix):
                m = re.match(r"(\d+)/", key[len(mprefix):])
                if m and int(m.group(1)) >= k:
                    missing = _layer_scope(scope, cell, k, True) + "/" + probe
                    raise ValueError(
                        f"{fn}: missing key {missing!r} (found {key!r} for a later layer; "
                        f"MultiRNNCell layers must be numbered cell_0, cell_1, ... without gaps)"
                    )
        return scopes, True
    nearby = sorted(k for k in params if k.startswith(_join(scope) + "/") or not scope)[:10]
    raise ValueError(
        f"{fn}: missing key {single + '/' + probe!r} (single cell) or "
        f"{multi0 + '/' + probe!r} (MultiRNNCell layer 0); keys under scope {scope!r}: "
        f"{nearby}"
    )


def _get_tf(params: Mapping[str, Any], key: str, expected: str, fn: str,
            why: str = "") -> np.ndarray:
    if key not in params:
        raise ValueError(f"{fn}: missing key {key!r} (expected {expected})"
                         + (f"; {why}" if why else ""))
    return _to_numpy(params[key], key)


def _check_no_extra(params: Mapping[str, Any], lscope: str, allowed: set[str], fn: str,
                    hints: Mapping[str, str] | None = None) -> None:
    for key in params:
        if key.startswith(lscope + "/"):
            rest = key[len(lscope) + 1:]
            if rest not in allowed:
                hint = (hints or {}).get(rest)
                raise ValueError(
                    f"{fn}: unexpected key {key!r}"
                    + (f": {hint}" if hint else f"; expected only {sorted(allowed)}")
                )


def _tf_layer_sizes(kernel: np.ndarray, key: str, gates: int, fn: str) -> tuple[int, int]:
    if kernel.ndim != 2 or kernel.shape[1] % gates != 0 or kernel.shape[1] == 0:
        raise ValueError(
            f"{fn}: {key!r} has shape {tuple(kernel.shape)}, expected (I+H, {gates}*H) "
            f"with H >= 1"
        )
    h = kernel.shape[1] // gates
    i = kernel.shape[0] - h
    if i < 1:
        raise ValueError(
            f"{fn}: {key!r} has shape {tuple(kernel.shape)}, expected (I+H, {gates}*H) = "
            f"(I+{h}, {gates * h}) with I >= 1 (input size)"
        )
    return i, h


def _check_torch_stack(sizes: list[tuple[int, int]], keys: list[str], gates: int, fn: str,
                       directions: int = 1):
    """PyTorch stacks need one hidden size and layer k>0 input size == hidden size (twice
    that for a bidirectional stack)."""
    _, h0 = sizes[0]
    for k, (i, h) in enumerate(sizes):
        if h != h0:
            raise ValueError(
                f"{fn}: inconsistent layer sizes: {keys[k]!r} implies hidden size {h} but "
                f"layer 0 has hidden size {h0}; PyTorch needs the same hidden size in every "
                f"layer (expected shape {(i + h0, gates * h0)})"
            )
        if k > 0 and i != directions * h0:
            raise ValueError(
                f"{fn}: inconsistent layer sizes: {keys[k]!r} has shape "
                f"{(i + h, gates * h)}, expected {(directions * h0 + h0, gates * h0)} (layer "
                f"{k} input size must equal {'2 * ' if directions == 2 else ''}hidden size "
                f"{h0})"
            )


def _use_multi(multi: bool | None, num_layers: int) -> bool:
    return num_layers > 1 if multi is None else bool(multi)


# --------------------------------------------------------------------------- layout tables


@dataclass(frozen=True)
class _Var:
    """One TF variable of a layer, described by the PyTorch gate blocks it holds.

    ``source`` says what the blocks are cut from: ``"w"`` the columns of
    ``[weight_ih.T; weight_hh.T]`` (a kernel ``[I+H, n*H]``), ``"b"`` the sum
    ``bias_ih + bias_hh``, ``"b_ih"`` / ``"b_hh"`` that bias alone (a bias
    ``[n*H]``).  ``blocks`` are torch row blocks in TF column order.  ``note``
    ends the shape in shape errors (where H comes from); ``why`` ends the
    missing-key error.
    """

    name: str
    source: str
    blocks: tuple[int, ...]
    note: str = ""
    why: str = ""

    def shape_text(self) -> str:
        n = len(self.blocks)
        cols = "H" if n == 1 else f"{n}*H"
        return f"[I+H, {cols}]" if self.source == "w" else f"[{cols}]"

    def shape(self, i: int, h: int) -> tuple[int, ...]:
        n = len(self.blocks) * h
        return (i + h, n) if self.source == "w" else (n,)


@dataclass(frozen=True)
class _Cell:
    """A TF1 cell's variables in terms of the torch module's gate blocks.

    ``variables[0]`` is the kernel that fixes I and H.  ``forget_block`` is the
    torch block that TF offsets by ``forget_bias`` at run time (see "Bias
    caveats").  ``hints`` explain TF variables that have no torch equivalent.
    """

    gates: int
    variables: tuple[_Var, ...]
    forget_block: int | None = None
    hints: Mapping[str, str] = field(default_factory=dict)


_PEEPHOLE_HINT = ("peephole weights have no nn.LSTM equivalent (use_peepholes=True cannot "
                  "be converted to PyTorch)")

_CELLS: dict[str, _Cell] = {
    # torch i, f, g, o -> TF i, j(=g), f, o
    "lstm": _Cell(
        gates=4,
        variables=(
            _Var("kernel", "w", (0, 2, 1, 3)),
            _Var("bias", "b", (0, 2, 1, 3), note=", H = kernel.shape[1] // 4"),
        ),
        forget_block=1,
        hints={**{f"w_{g}_diag": _PEEPHOLE_HINT for g in "ifo"},
               "projection/kernel": "LSTMCell num_proj projections are not supported"},
    ),
    # torch r, z, n -> TF gates r, u(=z) and candidate n; b_hn stays apart (reset_after=True)
    "gru": _Cell(
        gates=3,
        variables=(
            _Var("gates/kernel", "w", (0, 1)),
            _Var("gates/bias", "b", (0, 1)),
            _Var("candidate/kernel", "w", (2,), note=", from gates/kernel"),
            _Var("candidate/bias", "b_ih", (2,)),
            _Var("candidate/recurrent_bias", "b_hh", (2,),
                 why="without it the parameters describe a reset-before GRUCell "
                     "(reset_after=False), which has no exact nn.GRU equivalent"),
        ),
    ),
    "rnn": _Cell(
        gates=1,
        variables=(
            _Var("kernel", "w", (0,)),
            _Var("bias", "b", (0,), note=", H = kernel.shape[1]"),
        ),
    ),
}


def _blocks(arr: np.ndarray, blocks, h: int) -> np.ndarray:
    """Gate blocks of width ``h`` along the last axis, in the order given."""
    return np.concatenate([arr[..., b * h:(b + 1) * h] for b in blocks], axis=-1)


def _bidir_scope(scope: str, cell: str, direction: str, k: int, multi: bool) -> str:
    """A bidirectional layer's cell scope: bidirectional_dynamic_rnn's, or (multi)
    stack_bidirectional_dynamic_rnn's layer k."""
    if multi:
        return _join(scope, f"cell_{k}", "bidirectional_rnn", direction, cell)
    return _join(scope, direction, cell)


def _default_scope(scope: str | None, directions: int, multi: bool) -> str:
    if scope is not None:
        return scope
    if directions == 1:
        return "rnn"
    return "stack_bidirectional_rnn" if multi else "bidirectional_rnn"


def _from_torch(kind: str, sd: Mapping[str, Any], scope: str | None, num_layers: int | None,
                cell: str, prefix: str, multi: bool | None,
                forget_bias: float = 0.0) -> dict[str, np.ndarray]:
    """``from_torch_<kind>``: cut each TF variable of ``_CELLS[kind]`` out of the torch arrays
    (each direction of a bidirectional module separately)."""
    fn = f"from_torch_{kind}"
    spec = _CELLS[kind]
    parts = _torch_directions(sd, prefix, fn)
    nd = len(parts)
    read = [_read_torch_sd(p, spec.gates, num_layers, prefix, fn, nd) for p in parts]
    layers = read[0][0]
    if nd == 2:
        (lf, _), (lb, _) = read
        if len(lf) != len(lb) or any(a["w_hh"].shape != b["w_hh"].shape or
                                     a["w_ih"].shape != b["w_ih"].shape for a, b in zip(lf, lb)):
            raise ValueError(f"{fn}: the forward and the reverse (*_reverse) parameters have "
                             f"different layers or sizes")
    use_multi = _use_multi(multi, len(layers))
    if len(layers) > 1 and not use_multi:
        raise ValueError(f"{fn}: multi=False but the state dict has {len(layers)} layers")
    scope = _default_scope(scope, nd, use_multi)
    dtype = _common_dtype([np.empty(0, r[1]) for r in read])
    out: dict[str, np.ndarray] = {}
    for d, (layers, _) in enumerate(read):
        for k, layer in enumerate(layers):
            ls = (_layer_scope(scope, cell, k, use_multi) if nd == 1 else
                  _bidir_scope(scope, cell, ("fw", "bw")[d], k, use_multi))
            out.update(_layer_from_torch(spec, layer, dtype, forget_bias, ls))
    return out


def _layer_from_torch(spec: _Cell, layer: dict[str, np.ndarray], dtype: np.dtype,
                      forget_bias: float, ls: str) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    h = layer["w_hh"].shape[1]
    b_ih = layer["b_ih"].astype(dtype)
    b_hh = layer["b_hh"].astype(dtype)
    if spec.forget_block is not None:
        f = spec.forget_block
        b_hh[f * h:(f + 1) * h] -= dtype.type(forget_bias)
    sources = {
        "w": np.concatenate([layer["w_ih"].T, layer["w_hh"].T], axis=0).astype(dtype),
        "b": b_ih + b_hh,
        "b_ih": b_ih,
        "b_hh": b_hh,
    }
    for var in spec.variables:
        out[f"{ls}/{var.name}"] = _out(_blocks(sources[var.source], var.blocks, h), dtype)
    return out


def _find_bidir_layers(params: Mapping[str, Any], scope: str | None, cell: str
                       ) -> tuple[list[str], list[str]] | None:
    """The fw and bw cell scopes of a bidirectional layout under ``scope`` (None: the
    default scopes), or None when ``params`` holds none there."""
    if not isinstance(params, Mapping):
        return None

    def has(ls: str) -> bool:
        return any(isinstance(k, str) and k.startswith(ls + "/") for k in params)

    for sc, multi in ((scope or "bidirectional_rnn", False),
                      (scope or "stack_bidirectional_rnn", True)):
        if has(_bidir_scope(sc, cell, "fw", 0, multi)):
            n = 1
            while multi and has(_bidir_scope(sc, cell, "fw", n, True)):
                n += 1
            return ([_bidir_scope(sc, cell, "fw", k, multi) for k in range(n)],
                    [_bidir_scope(sc, cell, "bw", k, multi) for k in range(n)])
    return None


def _to_torch(kind: str, params: Mapping[str, Any], scope: str | None, cell: str, prefix: str,
              forget_bias: float = 0.0) -> dict[str, np.ndarray]:
    """``to_torch_<kind>``: validate the TF variables, then reassemble the torch gate blocks.

    ``bias_ih`` gets every block held by a ``"b"``/``"b_ih"`` variable; ``bias_hh``
    only the ``"b_hh"`` ones, zero elsewhere except ``forget_bias`` in the forget
    block. A bidirectional layout (fw/ and bw/ scopes) gives PyTorch's
    ``bidirectional=True`` keys (the bw direction as ``*_reverse``).
    """
    fn = f"to_torch_{kind}"
    uni = scope or "rnn"
    bidir = None
    if isinstance(params, Mapping) and not any(
            isinstance(k, str) and (k.startswith(_join(uni, cell) + "/") or
                                    k.startswith(_join(uni, "multi_rnn_cell") + "/"))
            for k in params):
        bidir = _find_bidir_layers(params, scope, cell)
    if bidir is None:
        return _to_torch_stack(kind, params, _find_tf_layers(params, uni, cell, fn)[0],
                               prefix, "", 1, forget_bias, fn)
    fw, bw = bidir
    out = _to_torch_stack(kind, params, fw, prefix, "", 2, forget_bias, fn)
    out.update(_to_torch_stack(kind, params, bw, prefix, _REVERSE, 2, forget_bias, fn))
    return out


def _to_torch_stack(kind: str, params: Mapping[str, Any], scopes: list[str], prefix: str,
                    suffix: str, directions: int, forget_bias: float, fn: str
                    ) -> dict[str, np.ndarray]:
    spec = _CELLS[kind]
    probe, *rest = spec.variables
    layers = []
    for ls in scopes:
        _check_no_extra(params, ls, {v.name for v in spec.variables}, fn, spec.hints)
        key = f"{ls}/{probe.name}"
        arrays = {probe.name: _get_tf(params, key, f"an array of shape {probe.shape_text()}", fn)}
        i, h = _tf_layer_sizes(arrays[probe.name], key, len(probe.blocks), fn)
        for var in rest:
            key, expected = f"{ls}/{var.name}", var.shape(i, h)
            arr = _get_tf(params, key, f"an array of shape {var.shape_text()} = {list(expected)}",
                          fn, var.why)
            _check_shape(arr, key, expected, var.shape_text() + var.note, fn)
            arrays[var.name] = arr
        layers.append((arrays, i, h))
    _check_torch_stack([(i, h) for _, i, h in layers], [f"{ls}/{probe.name}" for ls in scopes],
                       len(probe.blocks), fn, directions)
    dtype = _common_dtype([a for arrays, _, _ in layers for a in arrays.values()])

    def torch_array(arrays: dict[str, np.ndarray], sources: tuple[str, ...], h: int):
        """All torch gate blocks in order, each from the variable of ``sources`` holding it.

        A block no such variable holds (only ever in ``bias_hh``) is zero, or
        ``forget_bias`` for the forget gate.
        """
        parts = []
        for t in range(spec.gates):
            var = next((v for v in spec.variables if v.source in sources and t in v.blocks), None)
            if var is None:
                fill = forget_bias if t == spec.forget_block else 0.0
                parts.append(np.full(h, dtype.type(fill), dtype=dtype))
            else:
                arr = arrays[var.name].astype(dtype, copy=False)
                parts.append(_blocks(arr, [var.blocks.index(t)], h))
        return np.concatenate(parts, axis=-1)

    out: dict[str, np.ndarray] = {}
    for k, (arrays, i, h) in enumerate(layers):
        w = torch_array(arrays, ("w",), h)  # [I+H, G*H], columns in torch gate order
        out[f"{prefix}weight_ih_l{k}{suffix}"] = _out(w[:i].T, dtype)
        out[f"{prefix}weight_hh_l{k}{suffix}"] = _out(w[i:].T, dtype)
        out[f"{prefix}bias_ih_l{k}{suffix}"] = _out(torch_array(arrays, ("b", "b_ih"), h), dtype)
        out[f"{prefix}bias_hh_l{k}{suffix}"] = _out(torch_array(arrays, ("b_hh",), h), dtype)
    return out


# --------------------------------------------------------------------------- LSTM


def from_torch_lstm(
    sd: Mapping[str, Any],
    scope: str | None = None,
    num_layers: int | None = None,
    forget_bias: float = 1.0,
    cell: str = "basic_lstm_cell",
    *,
    prefix: str = "",
    multi: bool | None = None,
) -> dict[str, np.ndarray]:
    """Convert an ``nn.LSTM`` state dict to TF1 ``BasicLSTMCell`` / ``LSTMCell`` params.

    ``kernel = [weight_ih.T; weight_hh.T]`` with columns reordered from torch
    ``i, f, g, o`` to TF ``i, j, f, o``; ``bias = b_ih + b_hh`` reordered, with
    ``forget_bias`` subtracted from the f block (TF adds it back at run time).

    Args:
        sd: ``{"weight_ih_l0": [4H, I], "weight_hh_l0": [4H, H], "bias_ih_l0": [4H],
            "bias_hh_l0": [4H], ...}`` (values: anything ``np.asarray`` accepts).
        scope: variable scope of the RNN; None: ``"rnn"`` (``tf.nn.dynamic_rnn``), or for a
            bidirectional module ``"bidirectional_rnn"`` (one layer) /
            ``"stack_bidirectional_rnn"`` (several layers or ``multi=True``).
        num_layers: number of layers; inferred from the keys when None.
        forget_bias: the ``forget_bias`` of the TF cell that will use the params.
        cell: cell scope name, ``"basic_lstm_cell"`` or ``"lstm_cell"``.
        prefix: only keys starting with this are read (e.g. ``"encoder.lstm."``).
        multi: force (True) or forbid (False) the MultiRNNCell layout; default:
            MultiRNNCell iff more than one layer.
    """
    return _from_torch("lstm", sd, scope, num_layers, cell, prefix, multi, forget_bias)


def to_torch_lstm(
    params: Mapping[str, Any],
    scope: str | None = None,
    forget_bias: float = 1.0,
    cell: str = "basic_lstm_cell",
    *,
    prefix: str = "",
) -> dict[str, np.ndarray]:
    """Inverse of :func:`from_torch_lstm`: TF1 LSTM params -> ``nn.LSTM`` state dict.

    ``bias_ih`` receives the whole TF bias (reordered to i, f, g, o); ``bias_hh`` is
    zero except for ``forget_bias`` in its f block.  The forward function is
    identical to the TF cell; gradients w.r.t. the two torch biases are identical
    anyway.  Peephole LSTMs (``w_*_diag``) and projections have no ``nn.LSTM``
    equivalent and raise ValueError.  Returned keys are ``prefix + "weight_ih_l0"`` etc.
    """
    return _to_torch("lstm", params, scope, cell, prefix, forget_bias)


# --------------------------------------------------------------------------- GRU


def from_torch_gru(
    sd: Mapping[str, Any],
    scope: str | None = None,
    num_layers: int | None = None,
    cell: str = "gru_cell",
    *,
    prefix: str = "",
    multi: bool | None = None,
) -> dict[str, np.ndarray]:
    """Convert an ``nn.GRU`` state dict to rnncomp ``GRUCell(reset_after=True)`` params.

    ``nn.GRU`` is the reset-after (cuDNN) form: build the rnncomp cell as
    ``GRUCell(H, reset_after=True)``.  ``GRUCell(H)`` is TF1's reset-before form, a
    different function, and has no ``candidate/recurrent_bias`` for these params.

    torch row blocks are r, z, n.  ``gates/kernel`` [I+H, 2H] has column blocks r, u
    (u = z): ``[W_ir.T W_iz.T; W_hr.T W_hz.T]``; ``gates/bias`` = ``[b_ir+b_hr,
    b_iz+b_hz]``; ``candidate/kernel`` = ``[W_in.T; W_hn.T]``; ``candidate/bias`` =
    ``b_in``; ``candidate/recurrent_bias`` = ``b_hn``.  Other arguments as in
    :func:`from_torch_lstm`.
    """
    return _from_torch("gru", sd, scope, num_layers, cell, prefix, multi)


def to_torch_gru(
    params: Mapping[str, Any],
    scope: str | None = None,
    cell: str = "gru_cell",
    *,
    prefix: str = "",
) -> dict[str, np.ndarray]:
    """Inverse of :func:`from_torch_gru`: ``GRUCell(reset_after=True)`` params -> ``nn.GRU``.

    The r and z blocks of ``bias_ih`` receive ``gates/bias`` and those of ``bias_hh``
    are zero; the n blocks are ``candidate/bias`` (``b_in``) and
    ``candidate/recurrent_bias`` (``b_hn``).  A reset-before GRU (no
    ``candidate/recurrent_bias``) has no exact ``nn.GRU`` equivalent: ValueError.
    """
    return _to_torch("gru", params, scope, cell, prefix)


# --------------------------------------------------------------------------- vanilla RNN


def from_torch_rnn(
    sd: Mapping[str, Any],
    scope: str | None = None,
    num_layers: int | None = None,
    cell: str = "basic_rnn_cell",
    *,
    prefix: str = "",
    multi: bool | None = None,
) -> dict[str, np.ndarray]:
    """Convert an ``nn.RNN`` state dict (tanh or relu) to TF1 ``BasicRNNCell`` params.

    ``kernel = [weight_ih.T; weight_hh.T]`` [I+H, H], ``bias = b_ih + b_hh``.  The
    nonlinearity is not part of the state dict: build the cell with the same
    activation.  Other arguments as in :func:`from_torch_lstm`.
    """
    return _from_torch("rnn", sd, scope, num_layers, cell, prefix, multi)


def to_torch_rnn(
    params: Mapping[str, Any],
    scope: str | None = None,
    cell: str = "basic_rnn_cell",
    *,
    prefix: str = "",
) -> dict[str, np.ndarray]:
    """Inverse of :func:`from_torch_rnn`: ``bias_ih`` = TF bias, ``bias_hh`` = 0."""
    return _to_torch("rnn", params, scope, cell, prefix)
