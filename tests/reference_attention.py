"""NumPy reference for TF1's tf.contrib.seq2seq attention (BahdanauAttention, LuongAttention,
AttentionWrapper), written from the TF1 formulas independently of rnncomp, one instance and one
step at a time with explicit loops over the memory (no broadcasting tricks shared with the
implementation).

Memory masking as TF1: memory past its length is zeroed before the memory layer, and its scores
are -inf before the softmax.
"""

from __future__ import annotations

import math

import numpy as np

from reference_cells import gru_step, lstm_step


def _softmax_masked(score: np.ndarray, n: int) -> np.ndarray:
    """softmax over the first n entries; the others (score -inf) get 0."""
    out = np.zeros_like(score)
    s = score[:n]
    e = np.exp(s - np.max(s))
    out[:n] = e / np.sum(e)
    return out


def attention_ref(kind: str, params: dict, memory: np.ndarray, mem_len, query: np.ndarray,
                  scope: str, normalize_or_scale: bool = False):
    """Alignments [B, Tm] of one query [B, Q] ('bahdanau' or 'luong'); `scope` is the
    attention wrapper's scope (the mechanism's parameters live under it, memory_layer/kernel
    at the top)."""
    B, Tm, _ = memory.shape
    W_mem = params["memory_layer/kernel"]
    out = np.zeros((B, Tm), memory.dtype)
    for b in range(B):
        n = Tm if mem_len is None else int(mem_len[b])
        score = np.full(Tm, -np.inf)
        for j in range(n):
            key = memory[b, j] @ W_mem
            if kind == "bahdanau":
                p = f"{scope}/bahdanau_attention/"
                pq = query[b] @ params[p + "query_layer/kernel"]
                v = params[p + "attention_v"]
                if normalize_or_scale:
                    g, bias = params[p + "attention_g"], params[p + "attention_b"]
                    v = g * v / math.sqrt(float(np.sum(v * v)))
                    score[j] = np.sum(v * np.tanh(key + pq + bias))
                else:
                    score[j] = np.sum(v * np.tanh(key + pq))
            else:
                score[j] = float(np.dot(query[b], key))
                if normalize_or_scale:
                    score[j] *= params[f"{scope}/luong_attention/attention_g"]
        out[b] = _softmax_masked(score, n)
    return out


def attention_decoder_ref(kind: str, cell: str, params: dict, memory: np.ndarray, mem_len,
                          X: np.ndarray, H: int, attention_layer_size=None,
                          normalize_or_scale=False, output_attention=True,
                          scope="rnn/attention_wrapper"):
    """AttentionWrapper(cell, mechanism) over X [B, T, I] (all steps, no sequence_length).
    cell: 'lstm' (BasicLSTMCell(H)) or 'gru' (GRUCell(H)). Returns (outputs [B, T, .],
    (cell state tuple, attention [B, A], alignments [B, Tm]), alignment history [T, B, Tm])."""
    B, T, _ = X.shape
    D = memory.shape[2]
    A = attention_layer_size or D
    dt = X.dtype
    c = np.zeros((B, H), dt)
    h = np.zeros((B, H), dt)
    att = np.zeros((B, A), dt)
    al = np.zeros((B, memory.shape[1]), dt)
    values = memory.copy()
    if mem_len is not None:
        for b in range(B):
            values[b, int(mem_len[b]):] = 0
    outs, hist = [], []
    for t in range(T):
        x = np.concatenate([X[:, t], att], axis=1)
        if cell == "lstm":
            c, h = lstm_step(x, c, h, params, f"{scope}/basic_lstm_cell")
            cell_out = h
        else:
            h = gru_step(x, h, params, f"{scope}/gru_cell")
            cell_out = h
        al = attention_ref(kind, params, values, mem_len, cell_out, scope, normalize_or_scale)
        context = np.zeros((B, D), dt)
        for b in range(B):
            for j in range(memory.shape[1]):
                context[b] += al[b, j] * values[b, j]
        if attention_layer_size:
            att = np.concatenate([cell_out, context], 1) @ params[f"{scope}/attention_layer/kernel"]
        else:
            att = context
        outs.append(att if output_attention else cell_out)
        hist.append(al)
    state = (c, h) if cell == "lstm" else (h,)
    return np.stack(outs, 1), (state, att, al), np.stack(hist, 0)
