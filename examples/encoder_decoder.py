"""Encoder-decoder on a small translation-like task with EOS (seed workflow 7).

The script generates its data: dates written in words, in a few phrasings, translated to ISO
digits. Some sources have a day, some only a month, some only a year, so the targets have
different lengths and the decoder must learn when to stop (EOS):

    "march third , nineteen ninety"          -> "1990-03-03"
    "the twenty-first of june two thousand"  -> "2000-06-21"
    "october nineteen fifty-two"             -> "1952-10"
    "twenty thirty-one"                      -> "2031"

Words are embedded (rnncomp.frontend.layers.embedding), a GRU encoder (or LSTM) reads the source
(variable lengths via sequence_length) and its final state seeds a GRU decoder
(initial_state=). Training uses teacher forcing: the decoder reads the target shifted right
behind a GO token, with a masked cross-entropy over the valid target steps. At inference, a
decoder-step model (one step of the same cell, same parameters) runs from Python with greedy
argmax until every sequence has produced EOS or a max length. Reports exact-match accuracy on a
held-out set of dates never seen in training.

--bidirectional (a bidirectional_dynamic_rnn encoder) and --attention (an AttentionWrapper
with Luong attention over the encoder outputs) build the model from rnncomp.seq2seq instead:
training through dynamic_decode with a TrainingHelper, and greedy decoding inside the model
(dynamic_decode with a GreedyEmbeddingHelper: the whole decoding loop is one compiled scan;
--compiled-decode selects it without the other two). --beam K also decodes with a
BeamSearchDecoder of width K (encoder outputs and state tiled with tile_batch; the loop stops
when every beam has finished) and reports greedy vs beam exact match; --max-train-words N
trains on sources of at most N words and also reports accuracy on longer held-out sources.

    python examples/encoder_decoder.py
    python examples/encoder_decoder.py --cell lstm --iterations 4000
    python examples/encoder_decoder.py --bidirectional --attention
    python examples/encoder_decoder.py --bidirectional --attention --beam 4 --max-train-words 6
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as C  # noqa: E402
import numpy as np  # noqa: E402

import rnncomp as rc  # noqa: E402
from rnncomp import layers, optim  # noqa: E402
from rnncomp.train import Trainer  # noqa: E402

MONTHS = ["january", "february", "march", "april", "may", "june", "july", "august",
          "september", "october", "november", "december"]
_ORD = ["first", "second", "third", "fourth", "fifth", "sixth", "seventh", "eighth", "ninth",
        "tenth", "eleventh", "twelfth", "thirteenth", "fourteenth", "fifteenth", "sixteenth",
        "seventeenth", "eighteenth", "nineteenth", "twentieth"]
ORDINALS = _ORD + [f"twenty-{o}" for o in _ORD[:9]] + ["thirtieth", "thirty-first"]
ONES = ["", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
TEENS = ["ten", "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen",
         "eighteen", "nineteen"]
TENS = ["", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"]
DAYS_IN_MONTH = [31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31]
YEARS = (1900, 2099)

PAD, GO, EOS = 0, 1, 2
OUT_CHARS = "0123456789-"
OUT_VOCAB = ["<pad>", "<go>", "<eos>"] + list(OUT_CHARS)


def two_digits(n: int) -> str:
    """0..99 in words, as said inside a year ("oh five", "ten", "fifty-two")."""
    if n < 10:
        return f"oh {ONES[n]}"
    if n < 20:
        return TEENS[n - 10]
    return TENS[n // 10] + (f"-{ONES[n % 10]}" if n % 10 else "")


def year_words(y: int) -> str:
    hi, lo = divmod(y, 100)
    if y == 2000:
        return "two thousand"
    if 2000 < y < 2010:
        return f"two thousand {ONES[lo]}"
    if lo == 0:
        return f"{TEENS[hi - 10] if hi < 20 else 'twenty'} hundred"
    head = TEENS[hi - 10] if hi < 20 else "twenty"
    return f"{head} {two_digits(lo)}"


def sentence(rng: np.random.Generator, y: int, m: int, d: int, kind: int) -> tuple[str, str]:
    """(source words, target digits) for a date; kind 0/1: full date, 2: month-year, 3: year."""
    if kind == 0:
        return f"{MONTHS[m - 1]} {ORDINALS[d - 1]} , {year_words(y)}", f"{y:04d}-{m:02d}-{d:02d}"
    if kind == 1:
        return f"the {ORDINALS[d - 1]} of {MONTHS[m - 1]} {year_words(y)}", \
            f"{y:04d}-{m:02d}-{d:02d}"
    if kind == 2:
        return f"{MONTHS[m - 1]} {year_words(y)}", f"{y:04d}-{m:02d}"
    return year_words(y), f"{y:04d}"


def source_vocab() -> list[str]:
    words = {"the", "of", ",", "hundred", "thousand", "oh"}
    words.update(MONTHS, ORDINALS, ONES[1:], TEENS, TENS[2:])
    words.update(f"{TENS[t]}-{ONES[o]}" for t in range(2, 10) for o in range(1, 10))
    return ["<pad>"] + sorted(words)


def make_dataset(rng: np.random.Generator, n: int, exclude: set | None = None):
    """n (source, target) pairs; `exclude` holds (y, m, d, kind) tuples not to produce."""
    out, seen = [], set()
    while len(out) < n:
        y = int(rng.integers(YEARS[0], YEARS[1] + 1))
        m = int(rng.integers(1, 13))
        d = int(rng.integers(1, DAYS_IN_MONTH[m - 1] + 1))
        kind = int(rng.choice(4, p=[0.35, 0.35, 0.2, 0.1]))
        key = (y, m, d if kind < 2 else 0, kind)
        if exclude is not None and key in exclude:
            continue
        seen.add(key)
        out.append(sentence(rng, y, m, d, kind))
    return out, seen


def encode(pairs, src_index: dict, max_src: int, max_tgt: int):
    """Integer arrays: source ids [N, S], source lengths [N], decoder inputs (GO + target)
    [N, T], decoder targets (target + EOS) [N, T] and target weights (1 on valid steps)."""
    n = len(pairs)
    src = np.zeros((n, max_src), np.int64)
    src_len = np.zeros(n, np.int64)
    dec_in = np.zeros((n, max_tgt), np.int64)
    dec_out = np.zeros((n, max_tgt), np.int64)
    weights = np.zeros((n, max_tgt), np.float32)
    for i, (s, t) in enumerate(pairs):
        words = s.split()
        src[i, :len(words)] = [src_index[w] for w in words]
        src_len[i] = len(words)
        ids = [OUT_VOCAB.index(c) for c in t] + [EOS]
        dec_out[i, :len(ids)] = ids
        dec_in[i, :len(ids)] = [GO] + ids[:-1]
        weights[i, :len(ids)] = 1.0
    return src, src_len, dec_in, dec_out, weights


def make_cell(kind: str, units: int, name: str) -> rc.RNNCell:
    if kind == "gru":
        return rc.GRUCell(units, reset_after=True, name=name)
    if kind == "lstm":
        return rc.BasicLSTMCell(units, name=name)
    raise ValueError(f"cell: expected gru or lstm, received {kind!r}")


def build_models(cell: str, src_vocab: int, units: int, emb: int):
    """Three models sharing parameter names: training (teacher forcing), encoder, decoder step."""
    V = len(OUT_VOCAB)

    def encoder(src, src_len):
        x = layers.embedding(src, src_vocab, emb, name="src_embedding")
        _, state = rc.dynamic_rnn(make_cell(cell, units, "cell"), x, sequence_length=src_len,
                                  scope="encoder")
        return state

    def logits_of(h):
        return layers.dense(h, V, name="out_proj")

    def train_fn(src, src_len, dec_in, dec_out, weights):
        state = encoder(src, src_len)
        x = layers.embedding(dec_in, V, emb, name="tgt_embedding")
        outputs, _ = rc.dynamic_rnn(make_cell(cell, units, "cell"), x, initial_state=state,
                                    scope="decoder")
        logits = logits_of(outputs)                                  # [B, T, V]
        nll = -rc.take(rc.log_softmax(logits, -1), dec_out)           # [B, T]
        loss = rc.sum(nll * weights) / rc.sum(weights)               # masked mean
        return {"loss": loss, "logits": logits}

    def encoder_fn(src, src_len):
        state = encoder(src, src_len)
        return {"c": state.c, "h": state.h} if cell == "lstm" else {"h": state}

    def step_fn(token, h, c=None):
        x = layers.embedding(token, V, emb, name="tgt_embedding")
        dec = make_cell(cell, units, "cell")
        st = rc.LSTMStateTuple(c, h) if cell == "lstm" else h
        with rc.variable_scope("decoder"):
            out, new = dec(x, st)
        res = {"logits": logits_of(out)}
        if cell == "lstm":
            res["c"], res["h"] = new.c, new.h
        else:
            res["h"] = new
        return res

    seq = {"src": rc.Input((None, None), "i64"), "src_len": rc.Input((None,), "i64")}
    train = rc.Model(train_fn, {**seq, "dec_in": rc.Input((None, "T2"), "i64"),
                                "dec_out": rc.Input((None, "T2"), "i64"),
                                "weights": rc.Input((None, "T2"))}, name="seq2seq_train")
    enc = rc.Model(encoder_fn, seq, name="seq2seq_encoder")
    step_inputs = {"token": rc.Input((None,), "i64"), "h": rc.Input((None, units))}
    if cell == "lstm":
        step_inputs["c"] = rc.Input((None, units))
    step = rc.Model(step_fn, step_inputs, name="seq2seq_decoder_step")
    for m in (enc, step):
        missing = set(m.param_specs) - set(train.param_specs)
        assert not missing, f"{m.name}: parameters {missing} are not in the training model"
    return train, enc, step


def build_compiled_models(cell: str, src_vocab: int, units: int, emb: int, bidirectional: bool,
                          attention: bool, max_len: int, beam: int = 0, decode_batch: int = 100,
                          length_penalty: float = 0.0):
    """Two models sharing parameters: training through dynamic_decode with a TrainingHelper
    (teacher forcing) and inference through dynamic_decode with a GreedyEmbeddingHelper: the
    whole greedy decoding loop is one compiled scan (no Python loop). --bidirectional: the
    encoder is a bidirectional_dynamic_rnn of two cells of units/2 whose final states are
    concatenated; --attention: the decoder cell is an AttentionWrapper with Luong (scaled)
    attention over the encoder outputs, masked past each source length. beam > 0: a third
    model decodes with a BeamSearchDecoder of that width (the encoder's outputs and state
    tiled with tile_batch; a static batch of decode_batch sources, as beam search needs)."""
    V = len(OUT_VOCAB)

    def encoder(src, src_len):
        x = layers.embedding(src, src_vocab, emb, name="src_embedding")
        if not bidirectional:
            return rc.dynamic_rnn(make_cell(cell, units, "cell"), x, sequence_length=src_len,
                                  scope="encoder")
        half = units // 2
        (of, ob), (sf, sb) = rc.bidirectional_dynamic_rnn(
            make_cell(cell, half, "cell"), make_cell(cell, units - half, "cell"), x,
            sequence_length=src_len, scope="encoder")
        if cell == "lstm":
            state = rc.LSTMStateTuple(rc.concat([sf.c, sb.c], 1), rc.concat([sf.h, sb.h], 1))
        else:
            state = rc.concat([sf, sb], 1)
        return rc.concat([of, ob], 2), state

    def decoder(src, src_len, helper):
        memory, state = encoder(src, src_len)
        dcell = make_cell(cell, units, "cell")
        init = state
        if attention:
            mech = rc.seq2seq.LuongAttention(units, memory, memory_sequence_length=src_len,
                                             scale=True)
            dcell = rc.seq2seq.AttentionWrapper(dcell, mech, attention_layer_size=units)
            init = dcell.zero_state("B").clone(cell_state=state)
        dec = rc.seq2seq.BasicDecoder(dcell, helper(), init,
                                      output_layer=rc.seq2seq.Dense(V, name="out_proj"))
        return rc.seq2seq.dynamic_decode(dec, maximum_iterations=max_len)

    def table():
        return rc.param("tgt_embedding/embeddings", (V, emb), "glorot_uniform")

    def train_fn(src, src_len, dec_in, dec_out, weights, dec_len):
        def helper():
            return rc.seq2seq.TrainingHelper(rc.embedding_lookup(table(), dec_in), dec_len)
        out, _, _ = decoder(src, src_len, helper)
        logits = out.rnn_output                                      # [B, T, V]
        nll = -rc.take(rc.log_softmax(logits, -1), dec_out)           # [B, T]
        loss = rc.sum(nll * weights) / rc.sum(weights)               # masked mean
        return {"loss": loss, "logits": logits}

    def infer_fn(src, src_len):
        start = rc.cast(src_len * 0 + GO, "i32")
        def helper():
            return rc.seq2seq.GreedyEmbeddingHelper(table(), start, EOS)
        out, _, lengths = decoder(src, src_len, helper)
        return {"ids": out.sample_id, "lengths": lengths}

    seq = {"src": rc.Input((None, None), "i64"), "src_len": rc.Input((None,), "i64")}
    train = rc.Model(train_fn, {**seq, "dec_in": rc.Input((None, "T2"), "i64"),
                                "dec_out": rc.Input((None, "T2"), "i64"),
                                "weights": rc.Input((None, "T2")),
                                "dec_len": rc.Input((None,), "i64")}, name="seq2seq_train")
    infer = rc.Model(infer_fn, seq, name="seq2seq_greedy")
    missing = set(infer.param_specs) - set(train.param_specs)
    assert not missing, f"parameters {missing} are not in the training model"
    if not beam:
        return train, infer, None

    def beam_fn(src, src_len):
        memory, state = encoder(src, src_len)
        tile = lambda x: rc.seq2seq.tile_batch(x, beam)  # noqa: E731
        dcell = make_cell(cell, units, "cell")
        init = tile(state)
        if attention:
            mech = rc.seq2seq.LuongAttention(units, tile(memory),
                                             memory_sequence_length=tile(src_len), scale=True)
            dcell = rc.seq2seq.AttentionWrapper(dcell, mech, attention_layer_size=units)
            init = dcell.zero_state(decode_batch * beam).clone(cell_state=init)
        dec = rc.seq2seq.BeamSearchDecoder(
            dcell, table(), [GO] * decode_batch, EOS, init, beam,
            output_layer=rc.seq2seq.Dense(V, name="out_proj"),
            length_penalty_weight=length_penalty)
        out, _, _ = rc.seq2seq.dynamic_decode(dec, maximum_iterations=max_len)
        best = rc.slice(out.predicted_ids, 0, 1, axis=2)                # [B, T, 1]: beam 0
        return {"ids": rc.reshape(best, (decode_batch, max_len))}

    beam_m = rc.Model(beam_fn, {"src": rc.Input((decode_batch, None), "i64"),
                                "src_len": rc.Input((decode_batch,), "i64")},
                      name="seq2seq_beam")
    missing = set(beam_m.param_specs) - set(train.param_specs)
    assert not missing, f"parameters {missing} are not in the training model"
    return train, infer, beam_m


def beam_decode(run, beam_m, params, src, src_len, batch: int) -> list[str]:
    """The best beam of each source, up to its first EOS; the sources go in chunks of the beam
    model's static batch (the last chunk padded with copies of the first source)."""
    out = []
    p = {k: params[k] for k in beam_m.param_specs}
    for i in range(0, len(src), batch):
        s, n = src[i:i + batch], src_len[i:i + batch]
        pad = batch - len(s)
        if pad:
            s = np.concatenate([s, np.repeat(s[:1], pad, 0)])
            n = np.concatenate([n, np.repeat(n[:1], pad)])
        ids = run(beam_m, p, src=s, src_len=n)["ids"][:batch - pad]
        for row in ids:
            toks = list(row)
            toks = toks[:toks.index(EOS)] if EOS in toks else toks
            out.append("".join(OUT_VOCAB[t] for t in toks if t > EOS))
    return out


def compiled_greedy_decode(run, infer, params, src, src_len) -> list[str]:
    """The decoded strings: each sequence's ids up to its length, EOS dropped."""
    res = run(infer, {k: params[k] for k in infer.param_specs}, src=src, src_len=src_len)
    return ["".join(OUT_VOCAB[t] for t in ids[:n] if t > EOS)
            for ids, n in zip(res["ids"], res["lengths"])]


def greedy_decode(run, enc, step, params, src, src_len, max_len: int) -> list[str]:
    """Encode, then decode one step at a time from Python: feed back the argmax token until
    every sequence has produced EOS (or max_len steps)."""
    pick = lambda m: {k: params[k] for k in m.param_specs}  # noqa: E731
    state = run(enc, pick(enc), src=src, src_len=src_len)
    p_step = pick(step)
    n = len(src)
    token = np.full(n, GO, np.int64)
    done = np.zeros(n, bool)
    out = [[] for _ in range(n)]
    for _ in range(max_len):
        res = run(step, p_step, token=token, **state)
        token = res["logits"].argmax(-1).astype(np.int64)
        for i in np.flatnonzero(~done):
            if token[i] == EOS:
                done[i] = True
            elif token[i] > EOS:
                out[i].append(OUT_VOCAB[token[i]])
        state = {k: res[k] for k in state}
        if done.all():
            break
    return ["".join(o) for o in out]


def main(argv=None):
    p = C.parser(__doc__.split("\n\n")[0],
                 "Defaults: GRU encoder and decoder of 128 units, embeddings of 32, 2000\n"
                 "iterations of batch 64 (teacher forcing), Adam 0.003 with clipping; about a\n"
                 "minute on 2 cores. Exact-match accuracy is measured on 1000 held-out dates.")
    p.add_argument("--cell", choices=("gru", "lstm"), default="gru", help="default gru")
    p.add_argument("--units", type=int, default=128, help="default 128")
    p.add_argument("--embedding", type=int, default=32, help="embedding size (default 32)")
    p.add_argument("--iterations", type=int, default=2000, help="training steps (default 2000)")
    p.add_argument("--batch-size", type=int, default=64, help="default 64")
    p.add_argument("--lr", type=float, default=0.003, help="Adam learning rate (default 0.003)")
    p.add_argument("--clip", type=float, default=5.0, help="global-norm clipping (default 5)")
    p.add_argument("--train-size", type=int, default=20000, help="training pairs (default 20000)")
    p.add_argument("--test-size", type=int, default=1000, help="held-out pairs (default 1000)")
    p.add_argument("--max-len", type=int, default=12, help="decoding limit (default 12)")
    p.add_argument("--bidirectional", action="store_true",
                   help="bidirectional encoder (two cells of units/2; compiled decoding)")
    p.add_argument("--attention", action="store_true",
                   help="Luong attention over the encoder outputs (compiled decoding)")
    p.add_argument("--beam", type=int, default=0,
                   help="also decode with beam search of this width (BeamSearchDecoder; "
                        "compiled decoding) and report greedy vs beam accuracy")
    p.add_argument("--length-penalty", type=float, default=0.0,
                   help="beam search length_penalty_weight (default 0)")
    p.add_argument("--max-train-words", type=int, default=None,
                   help="train only on sources of at most this many words and also report "
                        "accuracy on held-out sources longer than that")
    p.add_argument("--compiled-decode", action="store_true",
                   help="decode greedily inside the model (dynamic_decode, one scan) instead "
                        "of a Python loop over a step model; implied by --bidirectional and "
                        "--attention")
    args = C.finish_args(p.parse_args(argv))

    rng = np.random.default_rng(args.seed)
    test_pairs, test_keys = make_dataset(np.random.default_rng(10_000 + args.seed),
                                         args.test_size)
    long_pairs = []
    if args.max_train_words is not None:
        n_words = lambda pair: len(pair[0].split())  # noqa: E731
        pool, _ = make_dataset(np.random.default_rng(20_000 + args.seed), 4 * args.test_size)
        long_pairs = [q for q in pool if n_words(q) > args.max_train_words][:args.test_size]
        test_pairs = [q for q in test_pairs if n_words(q) <= args.max_train_words]
        train_pairs = []
        while len(train_pairs) < args.train_size:
            more, _ = make_dataset(rng, args.train_size, exclude=test_keys)
            train_pairs += [q for q in more if n_words(q) <= args.max_train_words]
        train_pairs = train_pairs[:args.train_size]  # (no overlap: the long ones are longer)
    else:
        train_pairs, _ = make_dataset(rng, args.train_size, exclude=test_keys)
    vocab = source_vocab()
    index = {w: i for i, w in enumerate(vocab)}
    max_src = max(len(s.split()) for s, _ in train_pairs + test_pairs + long_pairs)
    max_tgt = 11  # "yyyy-mm-dd" + EOS
    train_arr = encode(train_pairs, index, max_src, max_tgt)
    test_arr = encode(test_pairs, index, max_src, max_tgt)
    long_arr = encode(long_pairs, index, max_src, max_tgt) if long_pairs else None
    for s, t in train_pairs[:3]:
        print(f"  {s!r:50} -> {t!r}")
    print(f"data: {len(train_pairs)} training pairs, {len(test_pairs)} held-out pairs (dates "
          f"not in training), source vocabulary {len(vocab)} words, output vocabulary "
          f"{len(OUT_VOCAB)}")

    compiled = args.bidirectional or args.attention or args.compiled_decode or args.beam > 0
    beam_m = None
    decode_batch = min(100, args.test_size)
    if compiled:
        train_m, infer_m, beam_m = build_compiled_models(
            args.cell, len(vocab), args.units, args.embedding, args.bidirectional,
            args.attention, args.max_len, beam=args.beam, decode_batch=decode_batch,
            length_penalty=args.length_penalty)
        train_arr = train_arr + (train_arr[4].sum(1).astype(np.int64),)
        test_arr = test_arr + (test_arr[4].sum(1).astype(np.int64),)
    else:
        train_m, enc_m, step_m = build_models(args.cell, len(vocab), args.units, args.embedding)
    params = train_m.init(args.seed)
    names = ("src", "src_len", "dec_in", "dec_out", "weights", "dec_len")
    feed = lambda arrs, idx: {k: a[idx] for k, a in zip(names, arrs)}  # noqa: E731
    backend = C.probe_backend(args.backend, train_m, params, **feed(train_arr, slice(0, 4)))
    run = C.Runner(backend)
    kind = " ".join(w for w, on in (("bidirectional", args.bidirectional),
                                     ("attention", args.attention)) if on)
    print(f"model: {args.cell} encoder-decoder{' (' + kind + ')' if kind else ''}, "
          f"{args.units} units, "
          f"{sum(v.size for v in params.values())} parameters, backend {backend}")

    trainer = Trainer(train_m, loss_output="loss", optimizer=optim.Adam(args.lr),
                      clip_norm=args.clip, backend=backend)
    opt_state = trainer.init(params).opt_state
    curve, acc_curve = [], []

    def accuracy(n=None, arr=None, pairs=None, beam=False):
        arr, pairs = (test_arr, test_pairs) if arr is None else (arr, pairs)
        sl = slice(0, n)
        if beam:
            pred = beam_decode(run, beam_m, params, arr[0][sl], arr[1][sl], decode_batch)
        elif compiled:
            pred = compiled_greedy_decode(run, infer_m, params, arr[0][sl], arr[1][sl])
        else:
            pred = greedy_decode(run, enc_m, step_m, params, arr[0][sl], arr[1][sl],
                                 args.max_len)
        return float(np.mean([p_ == t for p_, (_, t) in zip(pred, pairs[sl])])), pred

    with C.Timer() as tm:
        for it in C.progress(range(args.iterations), args, total=args.iterations,
                             desc="training"):
            idx = rng.integers(0, len(train_pairs), args.batch_size)
            params, opt_state, loss, _ = trainer.step(params, opt_state, feed(train_arr, idx))
            curve.append(loss)
            if (it + 1) % max(1, args.iterations // 5) == 0 or it + 1 == args.iterations:
                acc, _ = accuracy(200)
                acc_curve.append((it + 1, acc))
                print(f"iteration {it + 1:5d}  loss {np.mean(curve[-100:]):.4f}  exact match "
                      f"(200 held-out) {acc:.3f}", flush=True)
    acc, pred = accuracy()
    for (s, t), p_ in list(zip(test_pairs, pred))[:6]:
        print(f"  {s!r:50} -> {p_!r:14} {'ok' if p_ == t else 'WRONG, expected ' + repr(t)}")
    lengths = [len(p_) for p_ in pred]
    print(f"held-out exact-match accuracy {acc:.4f} on {len(pred)} pairs (output lengths "
          f"{sorted(set(lengths))}); training time {tm.seconds:.1f}s")
    extra = {}
    if beam_m is not None:
        extra["exact_match_beam"], bpred = accuracy(beam=True)
        changed = sum(a != b for a, b in zip(pred, bpred))
        print(f"beam search (width {args.beam}, length penalty {args.length_penalty}): "
              f"exact-match {extra['exact_match_beam']:.4f} vs greedy {acc:.4f} ({changed} of "
              f"{len(pred)} outputs differ)")
    if long_arr is not None:
        extra["exact_match_long"], _ = accuracy(arr=long_arr, pairs=long_pairs)
        words = sorted({len(s_.split()) for s_, _ in long_pairs})
        msg = f"longer sources than in training ({words[0]}-{words[-1]} words, trained on <= " \
              f"{args.max_train_words}): exact-match {extra['exact_match_long']:.4f} greedy"
        if beam_m is not None:
            extra["exact_match_long_beam"], _ = accuracy(arr=long_arr, pairs=long_pairs,
                                                         beam=True)
            msg += f", {extra['exact_match_long_beam']:.4f} beam"
        print(msg + f" on {len(long_pairs)} pairs")
    C.result(example="encoder_decoder", cell=args.cell, backend=backend, exact_match=acc,
             bidirectional=args.bidirectional, attention=args.attention,
             compiled_decode=bool(compiled), beam=args.beam, **extra,
             train_time=tm.seconds, time_per_100_iterations=tm.seconds / args.iterations * 100,
             final_loss=float(np.mean(curve[-100:])))

    plt = C.pyplot(args)
    if plt is not None:
        fig, axes = plt.subplots(1, 2, figsize=(12, 4))
        ax = axes[0]
        ax.semilogy(np.arange(1, len(curve) + 1), curve, alpha=0.5, label="train loss")
        ax.set_xlabel("iteration")
        ax.set_ylabel("cross-entropy per target step")
        ax2 = ax.twinx()
        if acc_curve:
            ax2.plot(*zip(*[(i, a * 100) for i, a in acc_curve]), "o-", color="C1",
                     label="exact match (%)")
        ax2.set_ylabel("held-out exact match (%)")
        ax.set_title(f"{args.cell} encoder-decoder")
        ax = axes[1]
        ax.axis("off")
        rows = [(s, p_, t) for (s, t), p_ in zip(test_pairs[:14], pred[:14])]
        for r, (s, p_, t) in enumerate(rows):
            ax.text(0.0, 1 - r / len(rows), s, fontsize=8, family="monospace", va="top")
            ax.text(0.72, 1 - r / len(rows), p_, fontsize=8, family="monospace", va="top",
                    color="green" if p_ == t else "red")
        ax.set_title(f"held-out examples (accuracy {acc:.1%})")
        C.save_figure(fig, args.out / f"encoder_decoder_{args.cell}.png")


if __name__ == "__main__":
    main()
