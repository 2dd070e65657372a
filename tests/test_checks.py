"""Exercise checks: full points for the reference, 0 for a stub or a call of the package, hints for mistakes.

The reference answers are the answer cells of ``solutions/``, the stubs those of their student versions: the
tests read them from the notebooks, so they test what students get.
"""

from __future__ import annotations

import importlib
import json
import linecache
import math
import re
from pathlib import Path
from textwrap import dedent

import nbformat
import pytest
import torch
import torch.nn.functional as F

import labutils
import labutils.plotting.heatmaps
from labutils import checks
from labutils.instructor import release
from labutils.tokens import EOS_IDX, PAD_IDX, SOS_IDX, SOURCE_VOCAB, TARGET_VOCAB, code

torch.set_num_threads(1)

ROOT = Path(__file__).resolve().parents[1]
SOLUTIONS = ROOT / "solutions"


def _answer_cells(student: bool) -> dict[str, str]:
    sources = {}
    for path in sorted(SOLUTIONS.glob("*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        if student:
            nb = release.student_notebook(nb, path.stem)
        for cell in nb.cells:
            info = cell.metadata.get("labutils", {})
            if info.get("kind") == "answer":
                sources[info["grade_id"]] = cell.source
    return sources


REFERENCE, STUBS = _answer_cells(student=False), _answer_cells(student=True)


def namespace() -> dict:
    """What the notebooks' import cells give an answer cell."""
    return dict(
        math=math, re=re, torch=torch, F=F, labutils=labutils, checks=checks, PAD_IDX=PAD_IDX,
        SOS_IDX=SOS_IDX, EOS_IDX=EOS_IDX, SOURCE_VOCAB=SOURCE_VOCAB, TARGET_VOCAB=TARGET_VOCAB, code=code,
    )  # fmt: skip


def define(source: str, name: str, extra: dict | None = None):
    scope = {**namespace(), **(extra or {})}
    source, filename = dedent(source), f"<answer {name}>"
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)  # as IPython does
    exec(compile(source, filename, "exec"), scope)
    return scope[name]


def run_check(grade_id: str, answer) -> checks.CheckResult:
    check = getattr(checks, checks.EXERCISES[grade_id].function)
    with checks.capture() as results:
        assert check(answer) is None  # a returned object would be a second output of the cell
    assert len(results) == 1
    return results[0]


GRADE_IDS = sorted(checks.EXERCISES)


def test_every_exercise_is_in_its_notebook_in_order():
    assert sorted(REFERENCE) == GRADE_IDS, (
        "every exercise of labutils.checks has an answer cell, and only those"
    )
    for grade_id, exercise in checks.EXERCISES.items():
        assert exercise.notebook == grade_id.split(".")[0]
        assert re.fullmatch(r"\d\.\d", exercise.number) and int(exercise.number[0]) == int(
            exercise.notebook[:2]
        )


@pytest.mark.parametrize("grade_id", GRADE_IDS)
def test_the_reference_answer_gets_full_points(grade_id):
    function = checks.EXERCISES[grade_id].function
    result = run_check(grade_id, define(REFERENCE[grade_id], function))
    assert result.failed == [], result.feedback()
    assert len(result.passed) >= 2
    assert result.points == result.exercise.points
    assert "Well done" in result.feedback()


@pytest.mark.parametrize("grade_id", GRADE_IDS)
def test_the_students_stub_gets_zero_and_not_attempted(grade_id):
    exercise = checks.EXERCISES[grade_id]
    stub = define(STUBS[grade_id], exercise.function)
    with pytest.raises(NotImplementedError) as raised:  # nbgrader's stub: no message
        stub(*([None] * stub.__code__.co_argcount))
    assert raised.type is NotImplementedError and raised.value.args == ()
    result = run_check(grade_id, stub)
    assert result.points == 0 and result.not_attempted and result.passed == []
    assert result.failed, "a stub fails every test"
    payload = result.payload()
    assert payload["feedback"].startswith(f"{exercise.title}: not done yet (0 of {exercise.points} point")
    assert "Replace `raise NotImplementedError()` in the cell above with your code" in payload["feedback"]
    assert payload["messages"] == [payload["feedback"]], "one line, not one per test"


# Answers that only call the package's version: they must earn nothing, and be told why.
CHEATS = {
    "01_tokenization.split_tokens": "def split_tokens(text):\n    return labutils.tokenize(text)",
    "01_tokenization.build_vocabulary": (
        "def build_vocabulary(token_lists):\n"
        "    return labutils.tokens.Vocabulary([t for ts in token_lists for t in ts]).stoi"
    ),
    "02_coding_and_padding.encode": (
        "def encode(text, stoi):\n"
        "    return labutils.tokens.code(text, SOURCE_VOCAB if stoi == SOURCE_VOCAB.stoi else TARGET_VOCAB)"
    ),
    "02_coding_and_padding.pad_codes": (
        "def pad_codes(codes, length, layout='package'):\n"
        "    return labutils.tokens.pad(codes, length, layout)"
    ),
    "02_coding_and_padding.make_batch": (
        "def make_batch(sequences):\n    return labutils.tokens.pad_batch(sequences)"
    ),
    "03_embedding.sinusoidal_encoding": (
        "def sinusoidal_encoding(max_len, d_model):\n"
        "    return labutils.model.SinusoidalPositionalEncoding(d_model, max_len).pe"
    ),
    "04_attention.attention": (
        "def attention(Q, K, V):\n    return labutils.attention.scaled_dot_product_attention(Q, K, V)"
    ),
    "04_attention.masked_attention": (
        "def masked_attention(Q, K, V, mask):\n    return sdpa(Q, K, V, mask)"  # imported under another name
    ),
    "04_attention.causal_mask": "def causal_mask(L):\n    return labutils.model.causal_mask(L)",
    "04_attention.split_heads": (
        "def split_heads(x, n_heads):\n"
        "    return labutils.attention.MultiHeadAttention(x.size(-1), n_heads).split_heads(x)"
    ),
    "05_transformer.encoder_layer_forward": (
        "def encoder_layer_forward(layer, x, src_pad_mask):\n    return layer(x, src_pad_mask)[0]"
    ),
    "05_transformer.decoder_layer_forward": (
        "def decoder_layer_forward(layer, x, memory, src_pad_mask, tgt_pad_mask):\n"
        "    return layer(x, memory, src_pad_mask, tgt_pad_mask)[0]"
    ),
    "05_transformer.teacher_forcing_loss": (
        "def teacher_forcing_loss(model, src, tgt, src_pad_mask, tgt_pad_mask):\n"
        "    from labutils.train import evaluate\n"
        "    return torch.tensor(evaluate(model, [(src, tgt, src_pad_mask, tgt_pad_mask)], 'cpu')[0])"
    ),
    "06_translation.greedy_translate": (
        "def greedy_translate(model, source, max_len=100):\n"
        "    return labutils.translate(model, [source], max_len=max_len)[0]"
    ),
}


@pytest.mark.parametrize("grade_id", sorted(CHEATS))
def test_an_answer_that_calls_the_package_gets_zero(grade_id):
    function = checks.EXERCISES[grade_id].function
    extra = {"sdpa": labutils.model.scaled_dot_product_attention}
    result = run_check(grade_id, define(CHEATS[grade_id], function, extra))
    assert result.points == 0, result.feedback()
    assert "switched off" in result.feedback()
    assert not result.not_attempted


def test_switched_off_functions_are_restored_after_the_check():
    originals = (
        labutils.tokenize,
        labutils.tokens.tokenize,
        labutils.data.tokenize,
        labutils.tokens.TOKEN_PATTERN,
    )
    run_check("01_tokenization.split_tokens", define(CHEATS["01_tokenization.split_tokens"], "split_tokens"))
    assert (
        labutils.tokenize,
        labutils.tokens.tokenize,
        labutils.data.tokenize,
        labutils.tokens.TOKEN_PATTERN,
    ) == originals
    assert labutils.tokenize("sin(x)") == ["sin", "(", "x", ")"]


# Typical wrong answers, at least three per exercise: each loses points with the hint that names *its* mistake.
# grade_id -> [(answer source, a piece of the hint its feedback must contain), ...]
MISTAKES: dict[str, list[tuple[str, str]]] = {
    "01_tokenization.split_tokens": [
        (
            "def split_tokens(text):\n"
            "    pattern = r'O\\(x\\*\\*6\\)|sin|cos|tan|exp|sinh|cosh|tanh|\\*\\*|[a-z]|[0-9]|[()*+\\-/]'\n"
            "    return re.findall(pattern, text)",
            "cosh was read as cos then h",
        ),
        (
            "def split_tokens(text):\n"
            "    pattern = r'O\\(x\\*\\*6\\)|sinh|cosh|tanh|sin|cos|tan|exp|\\*|\\*\\*|[a-z]|[0-9]|[()+\\-/]'\n"
            "    return re.findall(pattern, text)",
            "** was read as two *",
        ),
        (
            "def split_tokens(text):\n"
            "    pattern = r'O\\(x\\*\\*6\\)|sinh|cosh|tanh|sin|cos|tan|exp|\\*\\*|[a-z]|[0-9]+|[()*+\\-/]'\n"
            "    return re.findall(pattern, text)",
            "each digit is its own token",
        ),
        (
            "def split_tokens(text):\n"
            "    pattern = r'O\\(x\\*\\*6\\)|sinh|cosh|tanh|sin|cos|tan|exp|\\*\\*|[a-z]+|[0-9]|[()*+\\-/]'\n"
            "    return re.findall(pattern, text)",
            "letters side by side are separate variables",
        ),
        (
            "def split_tokens(text):\n"
            "    pattern = r'sinh|cosh|tanh|sin|cos|tan|exp|\\*\\*|[a-zO]|[0-9]|[()*+\\-/]'\n"
            "    return re.findall(pattern, text)",
            "O(x**6) is a single token",
        ),
        (  # the minus sign forgotten in the character class: findall skips it silently
            "def split_tokens(text):\n"
            "    pattern = r'O\\(x\\*\\*6\\)|sinh|cosh|tanh|sin|cos|tan|exp|\\*\\*|[a-z]|[0-9]|[()*+/]'\n"
            "    return re.findall(pattern, text)",
            "no token holds '-'",
        ),
    ],
    "01_tokenization.build_vocabulary": [
        (
            "def build_vocabulary(token_lists):\n"
            "    return {t: i for i, t in enumerate(sorted({t for ts in token_lists for t in ts}))}",
            "special tokens come first",
        ),
        (
            "def build_vocabulary(token_lists):\n"
            "    vocab = {'<pad>': 0, '<sos>': 1, '<eos>': 2}\n"
            "    for tokens in token_lists:\n"
            "        for t in tokens:\n"
            "            if t not in vocab:\n"
            "                vocab[t] = len(vocab)\n"
            "    return vocab",
            "not the order of appearance",
        ),
        (
            "def build_vocabulary(token_lists):\n"
            "    tokens = sorted({t for ts in token_lists for t in ts})\n"
            "    return {t: i for i, t in enumerate(['<pad>', '<sos>', '<eos>'] + tokens)}",
            "a special token met in the input got a second, later code",
        ),
        (
            "def build_vocabulary(token_lists):\n"
            "    tokens = sorted({t for ts in token_lists for t in ts} - {'<pad>', '<sos>', '<eos>'})\n"
            "    return {t: i + 3 for i, t in enumerate(tokens)}",
            "must be in the vocabulary too",
        ),
    ],
    "02_coding_and_padding.encode": [
        (
            "def encode(text, stoi):\n    return [stoi[t] for t in labutils.tokenize(text)]",
            "delimit the sequence",
        ),
        (
            "def encode(text, stoi):\n    return [stoi['<sos>']] + [stoi[t] for t in labutils.tokenize(text)]",
            "end the sequence with <eos>",
        ),
        (
            "def encode(text, stoi):\n    return [stoi[t] for t in labutils.tokenize(text)] + [stoi['<eos>']]",
            "start the sequence with <sos>",
        ),
        (
            "def encode(text, stoi):\n    return [2] + [stoi[t] for t in labutils.tokenize(text)] + [1]",
            "<sos> and <eos> are swapped",
        ),
    ],
    "02_coding_and_padding.pad_codes": [
        (  # <eos> after the padding whatever the layout
            "def pad_codes(codes, length, layout='package'):\n"
            "    return list(codes[:-1]) + [0] * (length - len(codes)) + [codes[-1]]",
            "this is the 'lecture' layout",
        ),
        (
            "def pad_codes(codes, length, layout='package'):\n"
            "    if layout == 'lecture':\n"
            "        return [0] * (length - len(codes)) + list(codes)\n"
            "    return list(codes) + [0] * (length - len(codes))",
            "pad at the end, not at the front",
        ),
        (
            "def pad_codes(codes, length, layout='package'):\n"
            "    if layout == 'lecture':\n"
            "        return list(codes[:-1]) + [0] * length + [codes[-1]]\n"
            "    return list(codes) + [0] * length",
            "in all, not by",
        ),
        (
            "def pad_codes(codes, length, layout='package'):\n"
            "    if layout == 'lecture':\n"
            "        return list(codes) + [0] * (length - len(codes) - 1) + [2]\n"
            "    return list(codes) + [0] * (length - len(codes))",
            "<eos> appears twice",
        ),
        (
            "def pad_codes(codes, length, layout='package'):\n"
            "    if layout == 'lecture':\n"
            "        eos = codes.pop()\n"
            "        codes.extend([0] * (length - len(codes) - 1) + [eos])\n"
            "    else:\n"
            "        codes.extend([0] * (length - len(codes)))\n"
            "    return codes",
            "instead of appending to the caller's list",
        ),
    ],
    "02_coding_and_padding.make_batch": [
        (
            "def make_batch(sequences):\n"
            "    n = max(map(len, sequences))\n"
            "    codes = torch.tensor([list(s) + [0] * (n - len(s)) for s in sequences])\n"
            "    return codes, codes != 0",
            "the mask is inverted",
        ),
        (
            "def make_batch(sequences):\n"
            "    codes = torch.nn.utils.rnn.pad_sequence([torch.tensor(s) for s in sequences])\n"
            "    return codes, codes == 0",
            "batch_first=True",
        ),
        (
            "def make_batch(sequences):\n"
            "    codes = torch.zeros(len(sequences), max(map(len, sequences)))\n"
            "    for i, s in enumerate(sequences):\n"
            "        codes[i, : len(s)] = torch.tensor(s)\n"
            "    return codes, codes == 0",
            "they must be integers",
        ),
        (
            "def make_batch(sequences):\n"
            "    n = max(map(len, sequences))\n"
            "    codes = torch.tensor([list(s) + [0] * (n - len(s)) for s in sequences])\n"
            "    mask = torch.zeros(len(sequences), n)\n"
            "    for i, s in enumerate(sequences):\n"
            "        mask[i, len(s):] = 1\n"
            "    return codes, mask",
            "the mask must be boolean",
        ),
    ],
    "03_embedding.sinusoidal_encoding": [
        (
            "def sinusoidal_encoding(max_len, d_model):\n"
            "    pos = torch.arange(max_len)[:, None].float()\n"
            "    angle = pos / 10000 ** (torch.arange(0, d_model, 2) / d_model)\n"
            "    pe = torch.zeros(max_len, d_model)\n"
            "    pe[:, 0::2], pe[:, 1::2] = torch.cos(angle), torch.sin(angle)\n"
            "    return pe",
            "sin and cos are swapped",
        ),
        (
            "def sinusoidal_encoding(max_len, d_model):\n"
            "    pos = torch.arange(max_len)[:, None].float()\n"
            "    i = torch.arange(d_model // 2)\n"
            "    angle = pos / 10000 ** (i / d_model)\n"
            "    pe = torch.zeros(max_len, d_model)\n"
            "    pe[:, 0::2], pe[:, 1::2] = torch.sin(angle), torch.cos(angle)\n"
            "    return pe",
            "twice the pair number i",
        ),
        (  # the exponent follows the column: column 2i+1 gets (2i+1)/d_model
            "def sinusoidal_encoding(max_len, d_model):\n"
            "    pos = torch.arange(max_len)[:, None].float()\n"
            "    angle = pos / 10000 ** (torch.arange(d_model) / d_model)\n"
            "    pe = torch.sin(angle)\n"
            "    pe[:, 1::2] = torch.cos(angle[:, 1::2])\n"
            "    return pe",
            "columns 2i and 2i+1 share one frequency",
        ),
        (  # the minus sign of exp(-2i ln(10000)/d) forgotten
            "def sinusoidal_encoding(max_len, d_model):\n"
            "    pos = torch.arange(max_len)[:, None].float()\n"
            "    angle = pos * torch.exp(torch.arange(0, d_model, 2) * math.log(10000.0) / d_model)\n"
            "    pe = torch.zeros(max_len, d_model)\n"
            "    pe[:, 0::2], pe[:, 1::2] = torch.sin(angle), torch.cos(angle)\n"
            "    return pe",
            "do not multiply",
        ),
        (
            "def sinusoidal_encoding(max_len, d_model):\n"
            "    pos = torch.arange(max_len)[:, None].float()\n"
            "    angle = pos / 10000 ** (torch.arange(0, d_model, 2) / d_model)\n"
            "    return torch.cat([torch.sin(angle), torch.cos(angle)], dim=1)",
            "interleave the columns",
        ),
    ],
    "03_embedding.embed": [
        (
            "def embed(codes, table, pe):\n    return table[codes] + pe[: codes.size(1)]",
            "multiply the embeddings by √d_model before",
        ),
        (
            "def embed(codes, table, pe):\n    return table[codes] / math.sqrt(table.size(1)) + pe[: codes.size(1)]",
            "do not divide",
        ),
        (
            "def embed(codes, table, pe):\n"
            "    return (table[codes] + pe[: codes.size(1)]) * math.sqrt(table.size(1))",
            "scale the embeddings only",
        ),
        (
            "def embed(codes, table, pe):\n"
            "    return table[codes] * math.sqrt(table.size(0)) + pe[: codes.size(1)]",
            "not the vocabulary size",
        ),
        (
            "def embed(codes, table, pe):\n    return table[codes] * math.sqrt(table.size(1))",
            "add the positional encodings",
        ),
    ],
    "03_embedding.project_2d": [
        (
            "def project_2d(X):\n    return X @ torch.linalg.svd(X, full_matrices=False)[2][:2].T",
            "centre the points first",
        ),
        (
            "def project_2d(X):\n"
            "    U, S, Vh = torch.linalg.svd(X - X.mean(0), full_matrices=False)\n"
            "    return U[:, :2]",
            "U[:, :2] alone has unit length",
        ),
        (
            "def project_2d(X):\n"
            "    centred = X - X.mean(dim=0)\n"
            "    U, S, Vh = torch.linalg.svd(centred)\n"
            "    return centred @ Vh[:, :2]",
            "the principal axes are the rows of Vh",
        ),
        (
            "def project_2d(X):\n"
            "    centred = X - X.mean(dim=0)\n"
            "    values, vectors = torch.linalg.eigh(centred.T @ centred / (len(X) - 1))\n"
            "    return centred @ vectors[:, :2]",
            "the two axes of least spread",
        ),
        (
            "def project_2d(X):\n"
            "    centred = X - X.mean(dim=0)\n"
            "    values, vectors = torch.linalg.eigh(torch.cov(centred.T))\n"
            "    return centred @ vectors[:, -2:]",
            "the two axes are in the wrong order",
        ),
    ],
    "04_attention.attention": [
        (
            "def attention(Q, K, V):\n"
            "    w = torch.softmax(Q @ K.transpose(-2, -1), dim=-1)\n    return w @ V, w",
            "divide the scores QKᵀ by √d",
        ),
        (
            "def attention(Q, K, V):\n"
            "    w = torch.softmax(Q @ K.transpose(-2, -1) / Q.size(-1), dim=-1)\n    return w @ V, w",
            "the scale is √d, not d",
        ),
        (  # the lecture's 2-D formula: dim=1 is the keys only without a batch in front
            "def attention(Q, K, V):\n"
            "    w = torch.softmax(Q @ K.transpose(-2, -1) / math.sqrt(Q.size(-1)), dim=1)\n    return w @ V, w",
            "take the softmax over the keys, the last axis",
        ),
        (
            "def attention(Q, K, V):\n"
            "    w = torch.softmax(Q @ K.transpose(-2, -1) / math.sqrt(Q.shape[1]), dim=-1)\n    return w @ V, w",
            "d is the size of the last axis",
        ),
        (
            "def attention(Q, K, V):\n"
            "    w = torch.softmax(Q @ K.transpose(-2, -1) / math.sqrt(Q.size(-1)), dim=-1)\n    return w, w @ V",
            "out and weights are swapped",
        ),
    ],
    "04_attention.masked_attention": [
        (
            "def masked_attention(Q, K, V, mask):\n"
            "    s = (Q @ K.transpose(-2, -1) / math.sqrt(Q.size(-1))).masked_fill(~mask, float('-inf'))\n"
            "    w = torch.softmax(s, -1)\n"
            "    return w @ V, w",
            "the mask is inverted",
        ),
        (
            "def masked_attention(Q, K, V, mask):\n"
            "    s = (Q @ K.transpose(-2, -1) / math.sqrt(Q.size(-1))).masked_fill(mask, 0)\n"
            "    w = torch.softmax(s, -1)\n"
            "    return w @ V, w",
            "fill the masked scores with float('-inf'), not 0",
        ),
        (
            "def masked_attention(Q, K, V, mask):\n"
            "    s = Q @ K.transpose(-2, -1) / math.sqrt(Q.size(-1))\n"
            "    s.masked_fill(mask, float('-inf'))\n"
            "    w = torch.softmax(s, -1)\n"
            "    return w @ V, w",
            "masked_fill returns a new tensor",
        ),
        (
            "def masked_attention(Q, K, V, mask):\n"
            "    w = torch.softmax(Q @ K.transpose(-2, -1) / math.sqrt(Q.size(-1)), -1)\n"
            "    w = w.masked_fill(mask, 0.0)\n"
            "    return w @ V, w",
            "mask the scores before the softmax",
        ),
        (
            "def masked_attention(Q, K, V, mask):\n"
            "    s = (Q @ K.transpose(-2, -1)).masked_fill(mask, float('-inf'))\n"
            "    w = torch.nan_to_num(torch.softmax(s, -1))\n"
            "    return w @ V, w",
            "divide the scores QKᵀ by √d",
        ),
    ],
    "04_attention.causal_mask": [
        (
            "def causal_mask(L):\n    return torch.ones(L, L, dtype=torch.bool).triu()",
            "the diagonal is masked too",
        ),
        (
            "def causal_mask(L):\n    return torch.ones(L, L, dtype=torch.bool).tril()",
            "True means NOT allowed here",
        ),
        (
            "def causal_mask(L):\n    return torch.ones(L, L, dtype=torch.bool).triu(1).T",
            "this is the transpose",
        ),
        (
            "def causal_mask(L):\n    return torch.triu(torch.ones(L, L), diagonal=1)",
            "the mask must be boolean",
        ),
    ],
    "04_attention.split_heads": [
        (
            "def split_heads(x, n_heads):\n"
            "    B, L, d = x.shape\n    return x.reshape(B, n_heads, L, d // n_heads)",
            "mixes positions into heads",
        ),
        (
            "def split_heads(x, n_heads):\n"
            "    B, L, d = x.shape\n    return x.view(B, L, n_heads, d // n_heads)",
            "add transpose(1, 2)",
        ),
        (
            "def split_heads(x, n_heads):\n"
            "    B, L, d = x.shape\n    return x.view(B, L, d // n_heads, n_heads).permute(0, 3, 1, 2)",
            "not every n_heads-th feature",
        ),
        (
            "def split_heads(x, n_heads):\n"
            "    B, L, d = x.shape\n    return x.transpose(1, 2).reshape(B, n_heads, L, d // n_heads)",
            "transpose after the view, not before",
        ),
    ],
    "05_transformer.encoder_layer_forward": [
        (
            "def encoder_layer_forward(layer, x, src_pad_mask):\n"
            "    x = layer.norm1(x + layer.self_attn(x, x, x, src_pad_mask)[0])\n"
            "    return layer.norm2(x + layer.feed_forward(x))",
            "post-norm",
        ),
        (
            "def encoder_layer_forward(layer, x, src_pad_mask):\n"
            "    h = layer.norm1(x)\n"
            "    x = layer.self_attn(h, h, h, src_pad_mask)[0]\n"
            "    return layer.feed_forward(layer.norm2(x))",
            "add the residual connections",
        ),
        (
            "def encoder_layer_forward(layer, x, src_pad_mask):\n"
            "    h = layer.norm1(x)\n"
            "    x = x + layer.self_attn(h, h, h)[0]\n"
            "    return x + layer.feed_forward(layer.norm2(x))",
            "pass src_pad_mask to self_attn",
        ),
        (
            "def encoder_layer_forward(layer, x, src_pad_mask):\n"
            "    h = layer.norm1(x)\n"
            "    x = x + layer.self_attn(h, h, h, src_pad_mask, causal=True)[0]\n"
            "    return x + layer.feed_forward(layer.norm2(x))",
            "no causal mask here",
        ),
        (
            "def encoder_layer_forward(layer, x, src_pad_mask):\n"
            "    x = x + layer.self_attn(layer.norm1(x), layer.norm1(x), layer.norm1(x), src_pad_mask)[0]\n"
            "    return x + layer.feed_forward(layer.norm1(x))",
            "each sublayer has its own LayerNorm",
        ),
    ],
    "05_transformer.decoder_layer_forward": [
        (
            "def decoder_layer_forward(layer, x, memory, src_pad_mask, tgt_pad_mask):\n"
            "    h = layer.norm1(x)\n"
            "    x = x + layer.self_attn(h, h, h, tgt_pad_mask)[0]\n"
            "    h = layer.norm2(x)\n"
            "    x = x + layer.cross_attn(h, memory, memory, src_pad_mask)[0]\n"
            "    return x + layer.feed_forward(layer.norm3(x))",
            "must be causal",
        ),
        (
            "def decoder_layer_forward(layer, x, memory, src_pad_mask, tgt_pad_mask):\n"
            "    h = layer.norm1(x)\n"
            "    x = x + layer.self_attn(h, h, h, src_pad_mask, causal=True)[0]\n"
            "    h = layer.norm2(x)\n"
            "    x = x + layer.cross_attn(h, memory, memory, tgt_pad_mask)[0]\n"
            "    return x + layer.feed_forward(layer.norm3(x))",
            "the masks are swapped",
        ),
        (
            "def decoder_layer_forward(layer, x, memory, src_pad_mask, tgt_pad_mask):\n"
            "    h = layer.norm1(x)\n"
            "    x = x + layer.self_attn(h, h, h, tgt_pad_mask, causal=True)[0]\n"
            "    h = layer.norm2(x)\n"
            "    x = x + layer.cross_attn(h, h, h, tgt_pad_mask)[0]\n"
            "    return x + layer.feed_forward(layer.norm3(x))",
            "keys and values from the memory",
        ),
        (
            "def decoder_layer_forward(layer, x, memory, src_pad_mask, tgt_pad_mask):\n"
            "    h = layer.norm1(x)\n"
            "    x = x + layer.self_attn(h, h, h, tgt_pad_mask, causal=True)[0]\n"
            "    h = layer.norm2(x)\n"
            "    x = x + layer.cross_attn(h, memory, memory)[0]\n"
            "    return x + layer.feed_forward(layer.norm3(x))",
            "pass src_pad_mask to the cross-attention too",
        ),
        (
            "def decoder_layer_forward(layer, x, memory, src_pad_mask, tgt_pad_mask):\n"
            "    x = layer.norm1(x + layer.self_attn(x, x, x, tgt_pad_mask, causal=True)[0])\n"
            "    x = layer.norm2(x + layer.cross_attn(x, memory, memory, src_pad_mask)[0])\n"
            "    return layer.norm3(x + layer.feed_forward(x))",
            "post-norm",
        ),
    ],
    "05_transformer.teacher_forcing_loss": [
        (
            "def teacher_forcing_loss(model, src, tgt, src_pad_mask, tgt_pad_mask):\n"
            "    logits = model(src, tgt[:, :-1], src_pad_mask, tgt_pad_mask[:, :-1])\n"
            "    return F.cross_entropy(logits.flatten(0, 1), tgt[:, 1:].flatten())",
            "ignore_index",
        ),
        (
            "def teacher_forcing_loss(model, src, tgt, src_pad_mask, tgt_pad_mask):\n"
            "    logits = model(src, tgt, src_pad_mask, tgt_pad_mask)\n"
            "    return F.cross_entropy(logits.flatten(0, 1), tgt.flatten(), ignore_index=PAD_IDX)",
            "shift the target",
        ),
        (
            "def teacher_forcing_loss(model, src, tgt, src_pad_mask, tgt_pad_mask):\n"
            "    logits = model(src, tgt[:, 1:], src_pad_mask, tgt_pad_mask[:, 1:])\n"
            "    return F.cross_entropy(logits.flatten(0, 1), tgt[:, :-1].flatten(), ignore_index=PAD_IDX)",
            "the shift goes the other way",
        ),
        (
            "def teacher_forcing_loss(model, src, tgt, src_pad_mask, tgt_pad_mask):\n"
            "    probs = model(src, tgt[:, :-1], src_pad_mask, tgt_pad_mask[:, :-1]).softmax(-1)\n"
            "    return F.cross_entropy(probs.flatten(0, 1), tgt[:, 1:].flatten(), ignore_index=PAD_IDX)",
            "give F.cross_entropy the raw logits",
        ),
        (
            "def teacher_forcing_loss(model, src, tgt, src_pad_mask, tgt_pad_mask):\n"
            "    logits = model(src, tgt[:, :-1])\n"
            "    return F.cross_entropy(logits.flatten(0, 1), tgt[:, 1:].flatten(), ignore_index=PAD_IDX)",
            "pass the padding masks to the model",
        ),
        (
            "def teacher_forcing_loss(model, src, tgt, src_pad_mask, tgt_pad_mask):\n"
            "    logits = model(src, tgt[:, :-1], src_pad_mask, tgt_pad_mask[:, :-1])\n"
            "    losses = F.cross_entropy(logits.transpose(1, 2), tgt[:, 1:], reduction='none')  # (B, Lt-1)\n"
            "    return (losses * ~tgt_pad_mask[:, 1:]).mean()",
            "divide by the number of real tokens",
        ),
    ],
    "06_translation.greedy_translate": [
        (
            "def greedy_translate(model, source, max_len=100):\n"
            "    src = torch.tensor([code(source, SOURCE_VOCAB)])\n"
            "    memory, ys = model.encode(src), [SOS_IDX]\n"
            "    for _ in range(max_len):\n"
            "        nxt = int(model.decode(torch.tensor([ys]), memory)[0, -1].argmax())\n"
            "        if nxt == EOS_IDX:\n"
            "            break\n"
            "        ys.append(nxt)\n"
            "    return ''.join(TARGET_VOCAB.itos[c] for c in ys)",
            "leave <sos> out",
        ),
        (
            "def greedy_translate(model, source, max_len=100):\n"
            "    src = torch.tensor([code(source, SOURCE_VOCAB)])\n"
            "    memory, ys = model.encode(src), [SOS_IDX]\n"
            "    for _ in range(max_len):\n"
            "        ys.append(int(model.decode(torch.tensor([ys]), memory)[0, -1].argmax()))\n"
            "    return ''.join(TARGET_VOCAB.itos[c] for c in ys[1:])",
            "stop at the first <eos>",
        ),
        (
            "def greedy_translate(model, source, max_len=100):\n"
            "    src = torch.tensor([code(source, SOURCE_VOCAB)])\n"
            "    memory, ys = model.encode(src), [SOS_IDX]\n"
            "    for _ in range(max_len):\n"
            "        nxt = int(model.decode(torch.tensor([ys]), memory)[0, 0].argmax())\n"
            "        if nxt == EOS_IDX:\n"
            "            break\n"
            "        ys.append(nxt)\n"
            "    return TARGET_VOCAB.decode(ys[1:])",
            "take the logits of the last position",
        ),
        (  # an RNN habit: feed back only the token just written
            "def greedy_translate(model, source, max_len=100):\n"
            "    src = torch.tensor([code(source, SOURCE_VOCAB)])\n"
            "    memory, ys = model.encode(src), [SOS_IDX]\n"
            "    for _ in range(max_len):\n"
            "        nxt = int(model.decode(torch.tensor([[ys[-1]]]), memory)[0, -1].argmax())\n"
            "        if nxt == EOS_IDX:\n"
            "            break\n"
            "        ys.append(nxt)\n"
            "    return TARGET_VOCAB.decode(ys[1:])",
            "feed the decoder the whole sequence so far",
        ),
    ],
    "06_translation.series_log_probability": [
        (
            "def series_log_probability(model, source, series):\n"
            "    src = torch.tensor([code(source, SOURCE_VOCAB)])\n"
            "    tgt = torch.tensor([code(series, TARGET_VOCAB)])\n"
            "    logp = model(src, tgt[:, :-1]).log_softmax(-1)[0]\n"
            "    return logp[:-1].gather(1, tgt[0, 1:-1, None]).sum().item()",
            "count <eos> too",
        ),
        (
            "def series_log_probability(model, source, series):\n"
            "    src = torch.tensor([code(source, SOURCE_VOCAB)])\n"
            "    tgt = torch.tensor([code(series, TARGET_VOCAB)])\n"
            "    logp = model(src, tgt[:, :-1]).log_softmax(-1)[0]\n"
            "    return logp.gather(1, tgt[0, 1:, None]).mean().item()",
            "do not average them",
        ),
        (
            "def series_log_probability(model, source, series):\n"
            "    src = torch.tensor([code(source, SOURCE_VOCAB)])\n"
            "    tgt = torch.tensor([code(series, TARGET_VOCAB)])\n"
            "    logp = model(src, tgt[:, :-1]).log_softmax(-1)[0]\n"
            "    return logp.gather(1, tgt[0, :-1, None]).sum().item()",
            "score every position on the NEXT token",
        ),
        (
            "def series_log_probability(model, source, series):\n"
            "    src = torch.tensor([code(source, SOURCE_VOCAB)])\n"
            "    tgt = torch.tensor([code(series, TARGET_VOCAB)])\n"
            "    logp = model(src, tgt[:, :-1]).log_softmax(1)[0]\n"
            "    return logp.gather(1, tgt[0, 1:, None]).sum().item()",
            "over the vocabulary, the last axis",
        ),
        (
            "def series_log_probability(model, source, series):\n"
            "    src = torch.tensor([code(source, SOURCE_VOCAB)])\n"
            "    tgt = torch.tensor([code(series, TARGET_VOCAB)])\n"
            "    p = model(src, tgt[:, :-1]).softmax(-1)[0]\n"
            "    return p.gather(1, tgt[0, 1:, None]).prod().item()",
            "this is the probability itself",
        ),
    ],
}


def test_every_exercise_has_a_mistake_test():
    assert sorted(MISTAKES) == GRADE_IDS
    for grade_id, mistakes in MISTAKES.items():
        hints = [hint for _, hint in mistakes]
        assert len(set(hints)) == len(hints) >= 3, f"{grade_id}: at least three mistakes, each its own hint"


@pytest.mark.parametrize(
    "grade_id, source, hint",
    [
        pytest.param(grade_id, source, hint, id=f"{grade_id}-{i}")
        for grade_id, mistakes in sorted(MISTAKES.items())
        for i, (source, hint) in enumerate(mistakes)
    ],
)
def test_a_typical_mistake_loses_points_with_the_hint_that_names_it(grade_id, source, hint):
    result = run_check(grade_id, define(source, checks.EXERCISES[grade_id].function))
    assert result.points < result.exercise.points and result.failed, result.feedback()
    assert not result.not_attempted
    named = [o.message for o in result.outcomes if not o.passed and hint in o.message]
    assert named, f"no failed test names the mistake ({hint!r}):\n{result.feedback()}"
    assert all("Hint:" in message for message in named), result.feedback()
    reference = define(REFERENCE[grade_id], checks.EXERCISES[grade_id].function)
    assert hint not in run_check(grade_id, reference).feedback()
    # The feedback says what came back and where it is wrong, never what the right output is.
    assert not re.search(r"expected -?[\d\[']|expected tensor|was expected", result.feedback()), (
        result.feedback()
    )


def test_points_are_proportional_to_the_tests_passed():
    # Right in the package's layout only: passes the tests that ask for it, fails the lecture layout.
    answer = define(
        "def pad_codes(codes, length, layout='package'):\n"
        "    return list(codes) + [0] * (length - len(codes))",
        "pad_codes",
    )
    result = run_check("02_coding_and_padding.pad_codes", answer)
    n = len(result.passed) + len(result.failed)
    assert 0 < len(result.passed) < n
    assert result.points == round(result.exercise.points * len(result.passed) / n, 2)


def test_an_exception_is_one_line_with_the_line_of_the_answer():
    answer = define(
        "def causal_mask(L):\n    ones = torch.ones(L, L)\n    return ones.triu(k=1)", "causal_mask"
    )
    result = run_check("04_attention.causal_mask", answer)
    assert result.points == 0 and not result.not_attempted
    message = result.outcomes[0].message
    assert message.startswith("your function raised TypeError")
    assert "line 3 of your causal_mask: `return ones.triu(k=1)`" in message
    assert "Traceback" not in result.feedback() and "\n" not in message


def test_something_that_is_not_a_function_is_explained():
    result = run_check("04_attention.causal_mask", torch.ones(3, 3))
    assert result.points == 0 and result.failed == ["is a function"]
    assert "pass the function itself" in result.feedback()


def test_a_check_leaves_the_notebooks_random_numbers_alone():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    run_check(
        "06_translation.greedy_translate",
        define(REFERENCE["06_translation.greedy_translate"], "greedy_translate"),
    )
    assert torch.equal(torch.rand(3), expected)


def test_hidden_tests_join_the_same_result_and_are_consumed():
    grade_id = "04_attention.masked_attention"
    answer = define(REFERENCE[grade_id], "masked_attention")

    @checks.hidden_test(grade_id)
    def passes(masked_attention):
        out, weights = masked_attention(
            torch.ones(1, 2, 4), torch.ones(1, 3, 4), torch.ones(1, 3, 4), torch.ones(2, 3) > 0
        )
        assert torch.equal(weights, torch.zeros(1, 2, 3)), "a fully masked row must give zero weights"

    @checks.hidden_test(grade_id)
    def fails(masked_attention):
        raise AssertionError("deliberately failing hidden test")

    @checks.hidden_test(grade_id)
    def compares_with_the_package(masked_attention):  # only the answer runs with the package switched off
        Q, mask = torch.eye(3)[None], labutils.attention.causal_mask(3)
        expected = labutils.attention.scaled_dot_product_attention(Q, Q, Q, mask)[1]
        assert torch.allclose(masked_attention(Q, Q, Q, mask)[1], expected)

    result = run_check(grade_id, answer)
    assert {"hidden: passes", "hidden: compares_with_the_package"} <= set(result.passed)
    assert result.failed == ["hidden: fails"]
    assert "deliberately failing hidden test" in result.feedback()
    n = len(result.outcomes)
    assert result.points == round(2 * (n - 1) / n, 2)
    again = run_check(grade_id, answer)  # registrations are consumed by the check that ran them
    assert not any(name.startswith("hidden:") for name in again.passed + again.failed)
    with pytest.raises(ValueError, match="unknown grade_id"):
        checks.hidden_test("04_attention.no_such_exercise")


def test_the_payload_is_what_the_grader_reads():
    grade_id = "04_attention.causal_mask"
    payload = run_check(grade_id, define(REFERENCE[grade_id], "causal_mask")).payload()
    assert set(payload) == {"grade_id", "points", "max_points", "messages", "passed", "failed", "feedback"}
    assert payload["grade_id"] == grade_id and payload["max_points"] == checks.EXERCISES[grade_id].points
    assert payload["points"] == payload["max_points"]
    assert payload["messages"] == [f"✓ {name}" for name in payload["passed"]] and payload["failed"] == []
    assert json.loads(json.dumps(payload)) == payload


def test_the_payload_has_one_message_per_test_saying_what_to_change():
    grade_id = "04_attention.masked_attention"
    source, hint = MISTAKES[grade_id][2]  # masked_fill's result dropped: right only where nothing is masked
    result = run_check(grade_id, define(source, "masked_attention"))
    payload = result.payload()
    assert payload["passed"] and payload["failed"]
    assert len(payload["messages"]) == len(result.outcomes) == len(payload["passed"]) + len(payload["failed"])
    assert all(isinstance(message, str) for message in payload["messages"])
    for message, outcome in zip(payload["messages"], result.outcomes, strict=True):
        if outcome.passed:
            assert message.startswith(f"✓ {outcome.name}")
        else:
            assert message.startswith(f"✗ {outcome.name}: ") and "Hint:" in message
    assert any(hint in message for message in payload["messages"])
    assert payload["feedback"].splitlines()[1:] == [f"  {m}" for m in payload["messages"]]
    assert json.loads(json.dumps(payload)) == payload


def test_in_ipython_a_check_publishes_exactly_one_output_with_the_json():
    from IPython.core.interactiveshell import InteractiveShell
    from IPython.utils.capture import capture_output

    shell = InteractiveShell.instance()
    grade_id = "04_attention.attention"
    shell.user_ns.update(namespace())
    shell.run_cell(REFERENCE[grade_id])
    with capture_output() as captured:
        result = shell.run_cell("checks.attention(attention)")
    assert result.success and result.result is None
    bundles = [output.data for output in captured.outputs]
    assert len(bundles) == 1
    payload = bundles[0][checks.MIME_TYPE]
    assert payload["grade_id"] == grade_id and payload["points"] == payload["max_points"]
    assert "text/html" in bundles[0] and "Exercise 4.1" in bundles[0]["text/plain"]
    assert captured.stdout == ""


def test_outside_ipython_the_feedback_is_printed(capsys):
    checks.causal_mask(define(STUBS["04_attention.causal_mask"], "causal_mask"))
    assert "Exercise 4.3 (causal_mask): not done yet" in capsys.readouterr().out


def test_under_nbgrader_a_check_returns_its_points_for_nbgrader_to_read(monkeypatch):
    grade_id = "04_attention.causal_mask"
    solved = define(REFERENCE[grade_id], "causal_mask")
    wrong = define("def causal_mask(L):\n    return torch.ones(L, L, dtype=torch.bool).triu()", "causal_mask")
    monkeypatch.setenv("NBGRADER_EXECUTION", "autograde")
    with checks.capture() as results:
        points = [
            checks.causal_mask(answer) for answer in (solved, wrong, define(STUBS[grade_id], "causal_mask"))
        ]
    assert points == [result.points for result in results]
    assert points[0] == checks.EXERCISES[grade_id].points and points[1] < points[0] and points[2] == 0
    monkeypatch.setenv("NBGRADER_EXECUTION", "")  # outside nbgrader: None, so the cell shows one output
    with checks.capture():
        assert checks.causal_mask(solved) is None


def test_the_guard_tells_package_code_from_the_code_that_runs_answers_by_file():
    """The grader counts calls into the package's files, not into the checks or the instructor's tools."""
    from labutils.checks import guard
    from labutils.instructor import grading

    def module(path):
        return guard.package_module(path, grading.PACKAGE, grading.NOT_THE_PACKAGE)

    assert module(labutils.attention.__file__) == "labutils.attention"
    assert module(labutils.plotting.heatmaps.__file__) == "labutils.plotting.heatmaps"
    assert module(labutils.plotting.__file__) == "labutils.plotting"
    for name in ("labutils.checks.core", "labutils.checks.attention", "labutils.instructor.grading"):
        assert module(importlib.import_module(name).__file__) is None, name
    assert module(__file__) is None
