"""Exercise checks: full points for the reference, 0 for a stub or a call of the package, hints for mistakes.

The reference answers are the answer cells of ``solutions/``, the stubs those of their student versions: the
tests read them from the notebooks, so they test what students get.
"""

from __future__ import annotations

import importlib
import io
import json
import linecache
import math
import re
import tokenize
from pathlib import Path
from textwrap import dedent

import gpt_mistakes
import nbformat
import pytest
import torch
import torch.nn.functional as F

import labutils
import labutils.plotting.heatmaps
from labutils import checks
from labutils.gpt import SEP_IDX, SEQUENCE_VOCAB
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
        tokenize=labutils.tokenize, SEQUENCE_VOCAB=SEQUENCE_VOCAB, SEP_IDX=SEP_IDX,
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
    "04_attention.multi_head_attention": (
        "def multi_head_attention(mha, query, key, value, key_pad_mask=None):\n"
        "    return mha(query, key, value, key_pad_mask, need_weights=True)"
    ),
    "05_transformer.training_step": (
        "def training_step(model, optimizer, batch, step, peak_lr, warmup_steps):\n"
        "    config = labutils.train.make_config('tiny', {'lr': peak_lr, 'warmup_steps': warmup_steps})\n"
        "    for group in optimizer.param_groups:\n"
        "        group['lr'] = labutils.train.learning_rate(step, config)\n"
        "    return 0.0"
    ),
    "06_translation.greedy_translate": (
        "def greedy_translate(model, source, max_len=100):\n"
        "    return labutils.translate(model, [source], max_len=max_len)[0]"
    ),
    **gpt_mistakes.CHEATS,  # notebook 07's
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
            "'sinh' came out as 'sin' then 'h'",
        ),
        (
            "def split_tokens(text):\n"
            "    pattern = r'O\\(x\\*\\*6\\)|sinh|cosh|tanh|sin|cos|tan|exp|\\*|\\*\\*|[a-z]|[0-9]|[()+\\-/]'\n"
            "    return re.findall(pattern, text)",
            "'**' came out as two '*'",
        ),
        (
            "def split_tokens(text):\n"
            "    pattern = r'O\\(x\\*\\*6\\)|sinh|cosh|tanh|sin|cos|tan|exp|\\*\\*|[a-z]|[0-9]+|[()*+\\-/]'\n"
            "    return re.findall(pattern, text)",
            "'120' came out as one token",
        ),
        (
            "def split_tokens(text):\n"
            "    pattern = r'O\\(x\\*\\*6\\)|sinh|cosh|tanh|sin|cos|tan|exp|\\*\\*|[a-z]+|[0-9]|[()*+\\-/]'\n"
            "    return re.findall(pattern, text)",
            "'hx' came out as one token",
        ),
        (
            "def split_tokens(text):\n"
            "    pattern = r'sinh|cosh|tanh|sin|cos|tan|exp|\\*\\*|[a-zO]|[0-9]|[()*+\\-/]'\n"
            "    return re.findall(pattern, text)",
            "'O(x**6)' came out as 6 tokens",
        ),
        (  # the minus sign forgotten in the character class: findall skips it silently
            "def split_tokens(text):\n"
            "    pattern = r'O\\(x\\*\\*6\\)|sinh|cosh|tanh|sin|cos|tan|exp|\\*\\*|[a-z]|[0-9]|[()*+/]'\n"
            "    return re.findall(pattern, text)",
            "no token holds '-'",
        ),
        (
            "def split_tokens(text):\n"
            "    pattern = r'O\\(x\\*\\*6\\)|sinh|cosh|tanh|sin|cos|tan|exp|\\*\\*|[a-z]|[0-9]|[()*+-/]'\n"
            "    return re.findall(pattern, text)",
            "'.' became a token",
        ),
        (
            "def split_tokens(text):\n"
            "    pattern = r'O\\(x\\*\\*6\\)|[a-z]|sinh|cosh|tanh|sin|cos|tan|exp|\\*\\*|[0-9]|[()*+\\-/]'\n"
            "    return re.findall(pattern, text)",
            "'tan' came out letter by letter",
        ),
        (
            "def split_tokens(text):\n"
            "    pattern = r'sinh|cosh|tanh|sin|cos|tan|exp|\\*\\*|[a-z]|[0-9]|[()*+\\-/]'\n"
            "    return re.findall(pattern, text)",
            "no token holds 'O'",
        ),
        (
            "def split_tokens(text):\n"
            "    pattern = r'(O\\(x\\*\\*6\\))|(sinh|cosh|tanh|sin|cos|tan|exp)|(\\*\\*|[a-z]|[0-9]|[()*+\\-/])'\n"
            "    return re.findall(pattern, text)",
            "a token is a string",
        ),
        (
            "def split_tokens(text):\n"
            "    pattern = r'O\\(x\\*\\*6\\)|sinh|cosh|tanh|sin|cos|tan|exp|\\*\\*|[a-z]|[0-9]|[()*+\\-/]'\n"
            "    return ' '.join(re.findall(pattern, text))",
            "the instructions ask for the list of tokens",
        ),
    ],
    "01_tokenization.build_vocabulary": [
        (
            "def build_vocabulary(token_lists):\n"
            "    return {t: i for i, t in enumerate(sorted({t for ts in token_lists for t in ts}))}",
            "the special tokens are missing from the front",
        ),
        (
            "def build_vocabulary(token_lists):\n"
            "    vocab = {'<pad>': 0, '<sos>': 1, '<eos>': 2}\n"
            "    for tokens in token_lists:\n"
            "        for t in tokens:\n"
            "            if t not in vocab:\n"
            "                vocab[t] = len(vocab)\n"
            "    return vocab",
            "the order in which the tokens first appear",
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
            "the three special tokens are missing",
        ),
        (
            "def build_vocabulary(token_lists):\n"
            "    tokens = {t for ts in token_lists for t in ts} | {'<pad>', '<sos>', '<eos>'}\n"
            "    return {t: i for i, t in enumerate(sorted(tokens))}",
            "the special tokens were sorted among the others",
        ),
        (
            "def build_vocabulary(token_lists):\n"
            "    tokens = sorted({t for ts in token_lists for t in ts} - {'<pad>', '<sos>', '<eos>'})\n"
            "    return {t: i for i, t in enumerate(['<pad>', '<sos>', '<eos>'] + tokens, start=1)}",
            "the codes start at 1",
        ),
        (
            "def build_vocabulary(token_lists):\n"
            "    tokens = sorted({t for ts in token_lists for t in ts} - {'<pad>', '<sos>', '<eos>'})\n"
            "    return ['<pad>', '<sos>', '<eos>'] + tokens",
            "return the dict from each token to its code",
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
        (
            "def encode(text, stoi):\n"
            "    return torch.tensor([stoi['<sos>']] + [stoi[t] for t in labutils.tokenize(text)] + [stoi['<eos>']])",
            "a Python list of codes",
        ),
    ],
    "02_coding_and_padding.pad_codes": [
        (  # <eos> after the padding whatever the layout
            "def pad_codes(codes, length, layout='package'):\n"
            "    return list(codes[:-1]) + [0] * (length - len(codes)) + [codes[-1]]",
            "this is the lecture's layout",
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
            "the caller's list was changed",
        ),
        (
            "def pad_codes(codes, length, layout='package'):\n"
            "    if len(codes) > length:\n"
            "        raise ValueError('too long')\n"
            "    padding = [0] * (length - len(codes) + 1)\n"
            "    if layout == 'lecture':\n"
            "        return list(codes[:-1]) + padding + [codes[-1]]\n"
            "    return list(codes) + padding",
            "17 items, where 16 are wanted",
        ),
        (
            "def pad_codes(codes, length, layout='package'):\n"
            "    if len(codes) > length:\n"
            "        raise ValueError('too long')\n"
            "    if layout == 'lecture':\n"
            "        return list(codes[:-1]) + [0] * (length - len(codes) - 1) + [codes[-1]]\n"
            "    return list(codes) + [0] * (length - len(codes))",
            "15 items, where 16 are wanted",
        ),
        (
            "def pad_codes(codes, length, layout='package'):\n"
            "    padding = [0] * (length - len(codes))\n"
            "    if layout == 'lecture':\n"
            "        return list(codes[:-1]) + padding + [codes[-1]]\n"
            "    return list(codes) + padding",
            "the instructions ask for a ValueError",
        ),
        (
            "def pad_codes(codes, length, layout='lecture'):\n"
            "    if len(codes) > length:\n"
            "        raise ValueError('too long')\n"
            "    if layout == 'lecture':\n"
            "        return list(codes[:-1]) + [0] * (length - len(codes)) + [codes[-1]]\n"
            "    return list(codes) + [0] * (length - len(codes))",
            "the default is the package's",
        ),
        (
            "def pad_codes(codes, length, layout='package'):\n"
            "    if len(codes) > length:\n"
            "        raise ValueError('too long')\n"
            "    padding = [0] * (length - len(codes))\n"
            "    if layout == 'lecture':\n"
            "        return torch.tensor(list(codes[:-1]) + padding + [codes[-1]])\n"
            "    return torch.tensor(list(codes) + padding)",
            "a new Python list of codes",
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
            "these codes are (L, B)",
        ),
        (
            "def make_batch(sequences):\n"
            "    codes = torch.zeros(len(sequences), max(map(len, sequences)))\n"
            "    for i, s in enumerate(sequences):\n"
            "        codes[i, : len(s)] = torch.tensor(s)\n"
            "    return codes, codes == 0",
            "integers of type torch.long",
        ),
        (
            "def make_batch(sequences):\n"
            "    n = max(map(len, sequences))\n"
            "    codes = torch.tensor([list(s) + [0] * (n - len(s)) for s in sequences])\n"
            "    mask = torch.zeros(len(sequences), n)\n"
            "    for i, s in enumerate(sequences):\n"
            "        mask[i, len(s):] = 1\n"
            "    return codes, mask",
            "the mask holds numbers 0 and 1",
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
            "the exponents are half what they should be",
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
            "the position is divided by",
        ),
        (
            "def sinusoidal_encoding(max_len, d_model):\n"
            "    pos = torch.arange(max_len)[:, None].float()\n"
            "    angle = pos / 10000 ** (torch.arange(0, d_model, 2) / d_model)\n"
            "    return torch.cat([torch.sin(angle), torch.cos(angle)], dim=1)",
            "all the sines came first",
        ),
        (
            "def sinusoidal_encoding(max_len, d_model):\n"
            "    pos = torch.arange(1, max_len + 1)[:, None].float()\n"
            "    angle = pos / 10000 ** (torch.arange(0, d_model, 2) / d_model)\n"
            "    pe = torch.zeros(max_len, d_model)\n"
            "    pe[:, 0::2], pe[:, 1::2] = torch.sin(angle), torch.cos(angle)\n"
            "    return pe",
            "the first row is position 1",
        ),
        (
            "def sinusoidal_encoding(max_len, d_model):\n"
            "    pos = torch.arange(max_len)[:, None].float()\n"
            "    angle = pos / 10000 ** (torch.arange(0, d_model, 2) // d_model)\n"
            "    pe = torch.zeros(max_len, d_model)\n"
            "    pe[:, 0::2], pe[:, 1::2] = torch.sin(angle), torch.cos(angle)\n"
            "    return pe",
            "every column has the same wavelength",
        ),
        (
            "def sinusoidal_encoding(max_len, d_model):\n"
            "    pos = torch.arange(max_len)[:, None].float()\n"
            "    angle = pos / 10000 ** (torch.arange(0, d_model, 2) / max_len)\n"
            "    pe = torch.zeros(max_len, d_model)\n"
            "    pe[:, 0::2], pe[:, 1::2] = torch.sin(angle), torch.cos(angle)\n"
            "    return pe",
            "divides 2i by the number of positions",
        ),
    ],
    "03_embedding.embed": [
        (
            "def embed(codes, table, pe):\n    return table[codes] + pe[: codes.size(1)]",
            "the embeddings were not scaled",
        ),
        (
            "def embed(codes, table, pe):\n    return table[codes] / math.sqrt(table.size(1)) + pe[: codes.size(1)]",
            "the embeddings were divided by √d_model",
        ),
        (
            "def embed(codes, table, pe):\n"
            "    return (table[codes] + pe[: codes.size(1)]) * math.sqrt(table.size(1))",
            "the positional encodings were scaled too",
        ),
        (
            "def embed(codes, table, pe):\n"
            "    return table[codes] * math.sqrt(table.size(0)) + pe[: codes.size(1)]",
            "the scale used the vocabulary size",
        ),
        (
            "def embed(codes, table, pe):\n    return table[codes] * math.sqrt(table.size(1))",
            "the positional encodings are missing",
        ),
        (
            "def embed(codes, table, pe):\n"
            "    return table[codes] * math.sqrt(table.size(1)) + pe[: codes.size(0)]",
            "every position got the encoding of position 0",
        ),
    ],
    "03_embedding.project_2d": [
        (
            "def project_2d(X):\n    return X @ torch.linalg.svd(X, full_matrices=False)[2][:2].T",
            "the points were not centred",
        ),
        (
            "def project_2d(X):\n"
            "    U, S, Vh = torch.linalg.svd(X - X.mean(0), full_matrices=False)\n"
            "    return U[:, :2]",
            "these coordinates have unit length along each axis",
        ),
        (
            "def project_2d(X):\n"
            "    centred = X - X.mean(dim=0)\n"
            "    U, S, Vh = torch.linalg.svd(centred)\n"
            "    return centred @ Vh[:, :2]",
            "these axes are columns of Vh",
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
        (
            "def project_2d(X):\n"
            "    centred = X - X.mean()\n"
            "    U, S, Vh = torch.linalg.svd(centred, full_matrices=False)\n"
            "    return centred @ Vh[:2].T",
            "centred by one number",
        ),
        (
            "def project_2d(X):\n"
            "    centred = X - X.mean(dim=1, keepdim=True)\n"
            "    U, S, Vh = torch.linalg.svd(centred, full_matrices=False)\n"
            "    return centred @ Vh[:2].T",
            "each point was centred by its own mean",
        ),
    ],
    "04_attention.attention": [
        (
            "def attention(Q, K, V):\n"
            "    w = torch.softmax(Q @ K.transpose(-2, -1), dim=-1)\n    return w @ V, w",
            "the scores were not scaled",
        ),
        (
            "def attention(Q, K, V):\n"
            "    w = torch.softmax(Q @ K.transpose(-2, -1) / Q.size(-1), dim=-1)\n    return w @ V, w",
            "the scores were divided by d",
        ),
        (  # the lecture's 2-D formula: dim=1 is the keys only without a batch in front
            "def attention(Q, K, V):\n"
            "    w = torch.softmax(Q @ K.transpose(-2, -1) / math.sqrt(Q.size(-1)), dim=1)\n    return w @ V, w",
            "the weights sum to one along another axis than the keys",
        ),
        (
            "def attention(Q, K, V):\n"
            "    w = torch.softmax(Q @ K.transpose(-2, -1) / math.sqrt(Q.shape[1]), dim=-1)\n    return w @ V, w",
            "the scale used the size of another axis than the features",
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
            "the masked scores were set to 0",
        ),
        (
            "def masked_attention(Q, K, V, mask):\n"
            "    s = Q @ K.transpose(-2, -1) / math.sqrt(Q.size(-1))\n"
            "    s.masked_fill(mask, float('-inf'))\n"
            "    w = torch.softmax(s, -1)\n"
            "    return w @ V, w",
            "the mask changed nothing",
        ),
        (
            "def masked_attention(Q, K, V, mask):\n"
            "    w = torch.softmax(Q @ K.transpose(-2, -1) / math.sqrt(Q.size(-1)), -1)\n"
            "    w = w.masked_fill(mask, 0.0)\n"
            "    return w @ V, w",
            "the weights were masked after the softmax",
        ),
        (
            "def masked_attention(Q, K, V, mask):\n"
            "    s = (Q @ K.transpose(-2, -1)).masked_fill(mask, float('-inf'))\n"
            "    w = torch.nan_to_num(torch.softmax(s, -1))\n"
            "    return w @ V, w",
            "the scores were not scaled",
        ),
        (
            "def masked_attention(Q, K, V, mask):\n"
            "    s = (Q @ K.transpose(-2, -1) / math.sqrt(Q.size(-1))).masked_fill(mask, float('-inf'))\n"
            "    w = torch.softmax(s, -1)\n"
            "    return w @ V, w",
            "a query whose keys are all masked got NaN",
        ),
        (
            "def masked_attention(Q, K, V, mask):\n"
            "    s = (Q @ K.transpose(-2, -1) / math.sqrt(Q.size(-1))).masked_fill(mask, -1e9)\n"
            "    w = torch.softmax(s, -1)\n"
            "    return w @ V, w",
            "got weights that sum to one",
        ),
        (
            "def masked_attention(Q, K, V, mask):\n"
            "    s = (Q @ K.transpose(-2, -1) / math.sqrt(Q.size(-1))).masked_fill(mask, -100.0)\n"
            "    w = torch.nan_to_num(torch.softmax(s, -1)) * ~mask.all(-1, keepdim=True)\n"
            "    return w @ V, w",
            "not exactly zero",
        ),
        (
            "def masked_attention(Q, K, V, mask):\n"
            "    w = torch.softmax(Q @ K.transpose(-2, -1) / math.sqrt(Q.size(-1)), -1)\n"
            "    return w @ V, w",
            "if you called masked_fill",
        ),
    ],
    "04_attention.causal_mask": [
        (
            "def causal_mask(L):\n    return torch.ones(L, L, dtype=torch.bool).triu()",
            "the diagonal is masked too",
        ),
        (
            "def causal_mask(L):\n    return torch.ones(L, L, dtype=torch.bool).tril()",
            "the mask is inverted: True means NOT allowed here",
        ),
        (
            "def causal_mask(L):\n    return torch.ones(L, L, dtype=torch.bool).triu(1).T",
            "this is the transpose",
        ),
        (
            "def causal_mask(L):\n    return torch.triu(torch.ones(L, L), diagonal=1)",
            "this mask holds numbers",
        ),
    ],
    "04_attention.split_heads": [
        (
            "def split_heads(x, n_heads):\n"
            "    B, L, d = x.shape\n    return x.reshape(B, n_heads, L, d // n_heads)",
            "positions were mixed into heads",
        ),
        (
            "def split_heads(x, n_heads):\n"
            "    B, L, d = x.shape\n    return x.view(B, L, n_heads, d // n_heads)",
            "the heads after the positions",
        ),
        (
            "def split_heads(x, n_heads):\n"
            "    B, L, d = x.shape\n    return x.view(B, L, d // n_heads, n_heads).permute(0, 3, 1, 2)",
            "each head took every H-th feature",
        ),
        (
            "def split_heads(x, n_heads):\n"
            "    B, L, d = x.shape\n    return x.transpose(1, 2).reshape(B, n_heads, L, d // n_heads)",
            "the axes were swapped before the features were cut into heads",
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
            "the residual connections are missing",
        ),
        (
            "def encoder_layer_forward(layer, x, src_pad_mask):\n"
            "    h = layer.norm1(x)\n"
            "    x = x + layer.self_attn(h, h, h)[0]\n"
            "    return x + layer.feed_forward(layer.norm2(x))",
            "the <pad> positions were attended to",
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
            "one LayerNorm served both sublayers",
        ),
        (
            "def encoder_layer_forward(layer, x, src_pad_mask):\n"
            "    h = layer.norm1(x)\n"
            "    x = x + layer.self_attn(h, h, h, src_pad_mask)[0]\n"
            "    return layer.feed_forward(layer.norm2(x))",
            "the feed-forward sublayer has no residual connection",
        ),
        (
            "def encoder_layer_forward(layer, x, src_pad_mask):\n"
            "    h = layer.norm1(x)\n"
            "    x = layer.self_attn(h, h, h, src_pad_mask)[0]\n"
            "    return x + layer.feed_forward(layer.norm2(x))",
            "the self-attention sublayer has no residual connection",
        ),
        (
            "def encoder_layer_forward(layer, x, src_pad_mask):\n"
            "    h = layer.norm1(x)\n"
            "    x = h + layer.self_attn(h, h, h, src_pad_mask)[0]\n"
            "    h = layer.norm2(x)\n"
            "    return h + layer.feed_forward(h)",
            "the residual was taken from the normalized x",
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
            "a position read later target tokens",
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
            "the cross-attention read the target itself",
        ),
        (
            "def decoder_layer_forward(layer, x, memory, src_pad_mask, tgt_pad_mask):\n"
            "    h = layer.norm1(x)\n"
            "    x = x + layer.self_attn(h, h, h, tgt_pad_mask, causal=True)[0]\n"
            "    h = layer.norm2(x)\n"
            "    x = x + layer.cross_attn(h, memory, memory)[0]\n"
            "    return x + layer.feed_forward(layer.norm3(x))",
            "a target position attended to a source <pad>",
        ),
        (
            "def decoder_layer_forward(layer, x, memory, src_pad_mask, tgt_pad_mask):\n"
            "    x = layer.norm1(x + layer.self_attn(x, x, x, tgt_pad_mask, causal=True)[0])\n"
            "    x = layer.norm2(x + layer.cross_attn(x, memory, memory, src_pad_mask)[0])\n"
            "    return layer.norm3(x + layer.feed_forward(x))",
            "post-norm",
        ),
        (
            "def decoder_layer_forward(layer, x, memory, src_pad_mask, tgt_pad_mask):\n"
            "    h = layer.norm1(x)\n"
            "    x = x + layer.self_attn(h, h, h, tgt_pad_mask, causal=True)[0]\n"
            "    h, m = layer.norm2(x), layer.norm2(memory)\n"
            "    x = x + layer.cross_attn(h, m, m, src_pad_mask)[0]\n"
            "    return x + layer.feed_forward(layer.norm3(x))",
            "the memory was normalized again",
        ),
        (
            "def decoder_layer_forward(layer, x, memory, src_pad_mask, tgt_pad_mask):\n"
            "    h = layer.norm1(x)\n"
            "    x = x + layer.self_attn(h, h, h, causal=True)[0]\n"
            "    h = layer.norm2(x)\n"
            "    x = x + layer.cross_attn(h, memory, memory, src_pad_mask)[0]\n"
            "    return x + layer.feed_forward(layer.norm3(x))",
            "a target position attended to a target <pad>",
        ),
        (
            "def decoder_layer_forward(layer, x, memory, src_pad_mask, tgt_pad_mask):\n"
            "    h = layer.norm1(x)\n"
            "    x = x + layer.self_attn(h, h, h, tgt_pad_mask, causal=True)[0]\n"
            "    x = x + layer.cross_attn(x, memory, memory, src_pad_mask)[0]\n"
            "    return x + layer.feed_forward(layer.norm3(x))",
            "the cross-attention's queries were not normalized",
        ),
    ],
    "05_transformer.teacher_forcing_loss": [
        (
            "def teacher_forcing_loss(model, src, tgt, src_pad_mask, tgt_pad_mask):\n"
            "    logits = model(src, tgt[:, :-1], src_pad_mask, tgt_pad_mask[:, :-1])\n"
            "    return F.cross_entropy(logits.flatten(0, 1), tgt[:, 1:].flatten())",
            "the <pad> positions counted in the mean",
        ),
        (
            "def teacher_forcing_loss(model, src, tgt, src_pad_mask, tgt_pad_mask):\n"
            "    logits = model(src, tgt, src_pad_mask, tgt_pad_mask)\n"
            "    return F.cross_entropy(logits.flatten(0, 1), tgt.flatten(), ignore_index=PAD_IDX)",
            "the decoder read the whole target and each position was scored on the token it reads",
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
            "cross_entropy was given probabilities",
        ),
        (
            "def teacher_forcing_loss(model, src, tgt, src_pad_mask, tgt_pad_mask):\n"
            "    logits = model(src, tgt[:, :-1])\n"
            "    return F.cross_entropy(logits.flatten(0, 1), tgt[:, 1:].flatten(), ignore_index=PAD_IDX)",
            "the model ran without the padding masks",
        ),
        (
            "def teacher_forcing_loss(model, src, tgt, src_pad_mask, tgt_pad_mask):\n"
            "    logits = model(src, tgt[:, :-1], src_pad_mask, tgt_pad_mask[:, :-1])\n"
            "    losses = F.cross_entropy(logits.transpose(1, 2), tgt[:, 1:], reduction='none')  # (B, Lt-1)\n"
            "    return (losses * ~tgt_pad_mask[:, 1:]).mean()",
            "the sum was divided by every position",
        ),
        (
            "def teacher_forcing_loss(model, src, tgt, src_pad_mask, tgt_pad_mask):\n"
            "    logits = model(src, tgt[:, :-1], src_pad_mask, tgt_pad_mask[:, :-1])\n"
            "    return F.cross_entropy(logits.flatten(0, 1), tgt[:, 1:].flatten(), ignore_index=PAD_IDX).item()",
            "a 0-dimensional tensor: training calls backward()",
        ),
        (
            "def teacher_forcing_loss(model, src, tgt, src_pad_mask, tgt_pad_mask):\n"
            "    logits = model(src, tgt[:, :-1], src_pad_mask, tgt_pad_mask[:, :-1])\n"
            "    return F.nll_loss(logits.flatten(0, 1), tgt[:, 1:].flatten(), ignore_index=PAD_IDX)",
            "nll_loss was given raw logits",
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
            "after the model wrote <eos>",
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
            "the next token was read from the first position",
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
        (
            "def greedy_translate(model, source, max_len=100):\n"
            "    src = torch.tensor([code(source, SOURCE_VOCAB)])\n"
            "    memory, ys = model.encode(src), [SOS_IDX]\n"
            "    for _ in range(max_len):\n"
            "        ys.append(int(model.decode(torch.tensor([ys]), memory)[0, -1].argmax()))\n"
            "    return TARGET_VOCAB.decode(ys[1:])",
            "the series ends at the first <eos>",
        ),
        (
            "def greedy_translate(model, source, max_len=100):\n"
            "    src = torch.tensor([code(source, SOURCE_VOCAB)])\n"
            "    memory, ys = model.encode(src), [SOS_IDX]\n"
            "    for _ in range(max_len):\n"
            "        nxt = int(model.decode(torch.tensor([ys]), memory)[0, -1].argmax())\n"
            "        if nxt != EOS_IDX:\n"
            "            ys.append(nxt)\n"
            "    return TARGET_VOCAB.decode(ys[1:])",
            "more token",
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
            "each position was scored on the token it reads",
        ),
        (
            "def series_log_probability(model, source, series):\n"
            "    src = torch.tensor([code(source, SOURCE_VOCAB)])\n"
            "    tgt = torch.tensor([code(series, TARGET_VOCAB)])\n"
            "    logp = model(src, tgt[:, :-1]).log_softmax(1)[0]\n"
            "    return logp.gather(1, tgt[0, 1:, None]).sum().item()",
            "normalized over the positions",
        ),
        (
            "def series_log_probability(model, source, series):\n"
            "    src = torch.tensor([code(source, SOURCE_VOCAB)])\n"
            "    tgt = torch.tensor([code(series, TARGET_VOCAB)])\n"
            "    p = model(src, tgt[:, :-1]).softmax(-1)[0]\n"
            "    return p.gather(1, tgt[0, 1:, None]).prod().item()",
            "this is the probability itself",
        ),
        (
            "def series_log_probability(model, source, series):\n"
            "    src = torch.tensor([code(source, SOURCE_VOCAB)])\n"
            "    tgt = torch.tensor([code(series, TARGET_VOCAB)])\n"
            "    logp = model(src, tgt[:, :-1]).log_softmax(-1)[0]\n"
            "    return logp.gather(1, tgt[0, 1:, None]).sum()",
            "the instructions ask for a Python float",
        ),
    ],
    "04_attention.multi_head_attention": [
        (
            "def multi_head_attention(mha, query, key, value, key_pad_mask=None):\n"
            "    B, Lq, d = query.shape\n"
            "    Q, K, V = (mha.split_heads(p(x)) for p, x in ((mha.q_proj, query), (mha.k_proj, key), (mha.v_proj, value)))\n"
            "    mask = None if key_pad_mask is None else key_pad_mask[:, None, None, :]\n"
            "    heads, w = labutils.attention.scaled_dot_product_attention(Q, K, V, mask)\n"
            "    return mha.out_proj(heads.reshape(B, Lq, d)), w",
            "the heads were joined in the wrong order",
        ),
        (
            "def multi_head_attention(mha, query, key, value, key_pad_mask=None):\n"
            "    B, Lq, d = query.shape\n"
            "    Q, K, V = (mha.split_heads(p(x)) for p, x in ((mha.q_proj, query), (mha.k_proj, key), (mha.v_proj, value)))\n"
            "    mask = None if key_pad_mask is None else key_pad_mask[:, None, None, :]\n"
            "    heads, w = labutils.attention.scaled_dot_product_attention(Q, K, V, mask)\n"
            "    return heads.transpose(1, 2).reshape(B, Lq, d), w",
            "joined but not mixed",
        ),
        (
            "def multi_head_attention(mha, query, key, value, key_pad_mask=None):\n"
            "    B, Lq, d = query.shape\n"
            "    Q, K, V = (mha.split_heads(p(x)) for p, x in ((mha.q_proj, query), (mha.k_proj, key), (mha.v_proj, value)))\n"
            "    heads, w = labutils.attention.scaled_dot_product_attention(Q, K, V)\n"
            "    return mha.out_proj(heads.transpose(1, 2).reshape(B, Lq, d)), w",
            "no key was masked",
        ),
        (
            "def multi_head_attention(mha, query, key, value, key_pad_mask=None):\n"
            "    B, Lq, d = query.shape\n"
            "    Q, K, V = (mha.split_heads(p(x)) for p, x in ((mha.q_proj, query), (mha.k_proj, key), (mha.v_proj, key)))\n"
            "    mask = None if key_pad_mask is None else key_pad_mask[:, None, None, :]\n"
            "    heads, w = labutils.attention.scaled_dot_product_attention(Q, K, V, mask)\n"
            "    return mha.out_proj(heads.transpose(1, 2).reshape(B, Lq, d)), w",
            "the values were computed from the key input",
        ),
        (
            "def multi_head_attention(mha, query, key, value, key_pad_mask=None):\n"
            "    B, Lq, d = query.shape\n"
            "    Q, K, V = (mha.split_heads(p(x)) for p, x in ((mha.q_proj, query), (mha.k_proj, key), (mha.v_proj, value)))\n"
            "    s = Q @ K.transpose(-2, -1) / math.sqrt(d)\n"
            "    if key_pad_mask is not None:\n"
            "        s = s.masked_fill(key_pad_mask[:, None, None, :], float('-inf'))\n"
            "    w = torch.softmax(s, -1)\n"
            "    return mha.out_proj((w @ V).transpose(1, 2).reshape(B, Lq, d)), w",
            "scaled by √d_model",
        ),
        (
            "def multi_head_attention(mha, query, key, value, key_pad_mask=None):\n"
            "    B, Lq, d = query.shape\n"
            "    Q, K, V = (mha.split_heads(p(x)) for p, x in ((mha.q_proj, query), (mha.k_proj, key), (mha.v_proj, value)))\n"
            "    mask = None if key_pad_mask is None else key_pad_mask[:, None, None, :]\n"
            "    heads, w = labutils.attention.scaled_dot_product_attention(Q, K, V, mask)\n"
            "    return mha.out_proj(heads.transpose(1, 2).reshape(B, Lq, d)), w.mean(1)",
            "averaged over the heads",
        ),
    ],
    "05_transformer.training_step": [
        (
            "def training_step(model, optimizer, batch, step, peak_lr, warmup_steps):\n"
            "    for group in optimizer.param_groups:\n"
            "        group['lr'] = peak_lr\n"
            "    src, tgt, spm, tpm = batch\n"
            "    loss = F.cross_entropy(model(src, tgt[:, :-1], spm, tpm[:, :-1]).flatten(0, 1), tgt[:, 1:].flatten(), ignore_index=PAD_IDX)\n"
            "    optimizer.zero_grad()\n"
            "    loss.backward()\n"
            "    optimizer.step()\n"
            "    return loss.item()",
            "during the warm-up the learning rate stayed at peak_lr",
        ),
        (
            "def training_step(model, optimizer, batch, step, peak_lr, warmup_steps):\n"
            "    for group in optimizer.param_groups:\n"
            "        group['lr'] = peak_lr * min(1.0, step / warmup_steps)\n"
            "    src, tgt, spm, tpm = batch\n"
            "    loss = F.cross_entropy(model(src, tgt[:, :-1], spm, tpm[:, :-1]).flatten(0, 1), tgt[:, 1:].flatten(), ignore_index=PAD_IDX)\n"
            "    optimizer.zero_grad()\n"
            "    loss.backward()\n"
            "    optimizer.step()\n"
            "    return loss.item()",
            "one warm-up step behind",
        ),
        (
            "def training_step(model, optimizer, batch, step, peak_lr, warmup_steps):\n"
            "    for group in optimizer.param_groups:\n"
            "        group['lr'] = peak_lr * (step + 1) / warmup_steps\n"
            "    src, tgt, spm, tpm = batch\n"
            "    loss = F.cross_entropy(model(src, tgt[:, :-1], spm, tpm[:, :-1]).flatten(0, 1), tgt[:, 1:].flatten(), ignore_index=PAD_IDX)\n"
            "    optimizer.zero_grad()\n"
            "    loss.backward()\n"
            "    optimizer.step()\n"
            "    return loss.item()",
            "after the warm-up the learning rate kept growing",
        ),
        (
            "def training_step(model, optimizer, batch, step, peak_lr, warmup_steps):\n"
            "    for group in optimizer.param_groups:\n"
            "        group['lr'] = peak_lr * min(1.0, (step + 1) / warmup_steps)\n"
            "    src, tgt, spm, tpm = batch\n"
            "    loss = F.cross_entropy(model(src, tgt[:, :-1], spm, tpm[:, :-1]).flatten(0, 1), tgt[:, 1:].flatten(), ignore_index=PAD_IDX)\n"
            "    loss.backward()\n"
            "    optimizer.step()\n"
            "    return loss.item()",
            "the gradients of an earlier step were added",
        ),
        (
            "def training_step(model, optimizer, batch, step, peak_lr, warmup_steps):\n"
            "    for group in optimizer.param_groups:\n"
            "        group['lr'] = peak_lr * min(1.0, (step + 1) / warmup_steps)\n"
            "    src, tgt, spm, tpm = batch\n"
            "    loss = F.cross_entropy(model(src, tgt[:, :-1], spm, tpm[:, :-1]).flatten(0, 1), tgt[:, 1:].flatten(), ignore_index=PAD_IDX)\n"
            "    optimizer.zero_grad()\n"
            "    optimizer.step()\n"
            "    loss.backward()\n"
            "    return loss.item()",
            "the parameters did not change",
        ),
        (
            "def training_step(model, optimizer, batch, step, peak_lr, warmup_steps):\n"
            "    for group in optimizer.param_groups:\n"
            "        group['lr'] = peak_lr * min(1.0, (step + 1) / warmup_steps)\n"
            "    src, tgt, spm, tpm = batch\n"
            "    loss = F.cross_entropy(model(src, tgt[:, :-1], spm, tpm[:, :-1]).flatten(0, 1), tgt[:, 1:].flatten())\n"
            "    optimizer.zero_grad()\n"
            "    loss.backward()\n"
            "    optimizer.step()\n"
            "    return loss.item()",
            "the <pad> positions counted in the loss",
        ),
        (
            "def training_step(model, optimizer, batch, step, peak_lr, warmup_steps):\n"
            "    for group in optimizer.param_groups:\n"
            "        group['lr'] = peak_lr * min(1.0, (step + 1) / warmup_steps)\n"
            "    src, tgt, spm, tpm = batch\n"
            "    loss = F.cross_entropy(model(src, tgt[:, :-1], spm, tpm[:, :-1]).flatten(0, 1), tgt[:, 1:].flatten(), ignore_index=PAD_IDX)\n"
            "    optimizer.zero_grad()\n"
            "    loss.backward()\n"
            "    optimizer.step()\n"
            "    return loss",
            "the loss as a Python float",
        ),
    ],
}


_PATTERN = r"O\(x\*\*6\)|sinh|cosh|tanh|sin|cos|tan|exp|\*\*|[a-z]|[0-9]|[()*+\-/]"


def _tokenizer(pattern: str) -> str:
    return f"def split_tokens(text):\n    return re.findall(r'{pattern}', text)"


_MHA = (
    "def multi_head_attention(mha, query, key, value, key_pad_mask=None):\n"
    "    B, Lq, d = query.shape\n"
    "    Q = mha.split_heads(mha.q_proj(query))\n"
    "    K = mha.split_heads(mha.k_proj(key))\n"
    "    V = mha.split_heads(mha.v_proj(value))\n"
    "    mask = None if key_pad_mask is None else key_pad_mask[:, None, None, :]\n"
    "    heads, w = labutils.attention.scaled_dot_product_attention(Q, K, V, mask)\n"
    "    return mha.out_proj(heads.transpose(1, 2).reshape(B, Lq, d)), w"
)
_DECODER = (
    "def decoder_layer_forward(layer, x, memory, src_pad_mask, tgt_pad_mask):\n"
    "    h = layer.norm1(x)\n"
    "    a, _ = layer.self_attn(h, h, h, tgt_pad_mask, causal=True)\n"
    "    x = x + a\n"
    "    h = layer.norm2(x)\n"
    "    a, _ = layer.cross_attn(h, memory, memory, src_pad_mask)\n"
    "    x = x + a\n"
    "    return x + layer.feed_forward(layer.norm3(x))"
)
_LOSS = (
    "def teacher_forcing_loss(model, src, tgt, src_pad_mask, tgt_pad_mask):\n"
    "    logits = model(src, tgt[:, :-1], src_pad_mask, tgt_pad_mask[:, :-1])\n"
    "    return F.cross_entropy(logits.flatten(0, 1), tgt[:, 1:].flatten(), ignore_index=PAD_IDX)"
)
_STEP = (
    "def training_step(model, optimizer, batch, step, peak_lr, warmup_steps):\n"
    "    lr = peak_lr * min(1.0, (step + 1) / warmup_steps)\n"
    "    for group in optimizer.param_groups:\n"
    "        group['lr'] = lr\n"
    "    src, tgt, spm, tpm = batch\n"
    "    logits = model(src, tgt[:, :-1], spm, tpm[:, :-1])\n"
    "    loss = F.cross_entropy(logits.flatten(0, 1), tgt[:, 1:].flatten(), ignore_index=PAD_IDX)\n"
    "    optimizer.zero_grad()\n"
    "    loss.backward()\n"
    "    optimizer.step()\n"
    "    return loss.item()"
)
_GREEDY = (
    "def greedy_translate(model, source, max_len=100):\n"
    "    memory = model.encode(torch.tensor([code(source, SOURCE_VOCAB)]))\n"
    "    ys = torch.tensor([[SOS_IDX]])\n"
    "    for _ in range(max_len):\n"
    "        next_token = model.decode(ys, memory)[0, -1].argmax()\n"
    "        if next_token == EOS_IDX:\n"
    "            break\n"
    "        ys = torch.cat([ys, next_token.view(1, 1)], dim=1)\n"
    "    return TARGET_VOCAB.decode(ys[0, 1:].tolist())"
)
_MASKED = (
    "def masked_attention(Q, K, V, mask):\n"
    "    s = Q @ K.transpose(-2, -1) / math.sqrt(Q.size(-1))\n"
    "    w = torch.nan_to_num(torch.softmax(s.masked_fill(mask, float('-inf')), -1))\n"
    "    return w @ V, w"
)

# Hints computed from what came back (which token was split, which way the mask points, which position the
# loss scored), and hints for the exception a typical mistake raises.
MISTAKES["01_tokenization.split_tokens"] += [
    (  # only cosh split: the hint names it, and only where the input holds it
        _tokenizer(_PATTERN.replace("cosh|", "").replace("|cos|", "|cos|cosh|")),
        "'cosh' came out as 'cos' then 'h'",
    ),
    (_tokenizer(_PATTERN.replace(r"O\(x\*\*6\)", r"O(x\*\*6)")), "of your tokens are empty strings ''"),
    (_tokenizer(_PATTERN.replace(r"[()*+\-/]", r"[()*+\-/ ]")), "a space became a token"),
    (
        "def split_tokens(text):\n    return text.split()",
        "came out as one token: a token is one function name",
    ),
]
MISTAKES["01_tokenization.build_vocabulary"] += [
    (
        "def build_vocabulary(token_lists):\n"
        "    seen = sorted({t for ts in token_lists for t in ts} - {'<pad>', '<sos>', '<eos>'})\n"
        "    return {c: t for c, t in enumerate(['<pad>', '<sos>', '<eos>'] + seen)}",
        "this dict goes from each code to its token",
    ),
    (
        "def build_vocabulary(token_lists):\n"
        "    seen = sorted({t for ts in token_lists for t in ts} - {'<pad>', '<sos>', '<eos>'}, reverse=True)\n"
        "    return {t: c for c, t in enumerate(['<pad>', '<sos>', '<eos>'] + seen)}",
        "has a smaller code than",
    ),
    (
        "def build_vocabulary(token_lists):\n"
        "    seen = sorted({t for ts in token_lists for t in ts} - {'<pad>', '<sos>', '<eos>'})\n"
        "    return {t: c for c, t in enumerate(seen + ['<pad>', '<sos>', '<eos>'])}",
        "the special tokens keep codes 0, 1, 2 (padding, start, end)",
    ),
]
MISTAKES["02_coding_and_padding.encode"] += [
    (
        "def encode(text, stoi):\n    return [1] + [SOURCE_VOCAB.stoi[t] for t in labutils.tokenize(text)] + [2]",
        "'O(x**6)' is in the dict stoi your function was given",
    ),
    (
        "def encode(text, stoi):\n    return [1] + [stoi[c] for c in text] + [2]",
        "'t' is no token of the vocabulary",
    ),
]
MISTAKES["02_coding_and_padding.pad_codes"] += [
    (
        "def pad_codes(codes, length, layout='package'):\n"
        "    assert len(codes) <= length\n"
        "    padding = [0] * (length - len(codes))\n"
        "    return list(codes) + padding if layout == 'package' else list(codes[:-1]) + padding + [2]",
        "raised AssertionError. Hint: the instructions ask for a ValueError, the exception Python uses",
    ),
]
MISTAKES["02_coding_and_padding.make_batch"] += [
    (
        "def make_batch(sequences):\n"
        "    L = max(len(s) for s in sequences)\n"
        "    codes = torch.tensor([list(s) + [0] * (L - len(s)) for s in sequences])\n"
        "    return codes == 0, codes",
        "the pair is (codes, mask), codes first",
    ),
]
MISTAKES["03_embedding.embed"] += [
    (
        "def embed(codes, table, pe):\n    return table[codes] * math.sqrt(table.size(1)) + pe",
        "pe holds the encodings of 64 positions, and the sequences have 13",
    ),
    (
        "def embed(codes, table, pe):\n    return table[codes] * math.sqrt(table.size(1)) + pe[: codes.size(0)]",
        "the encodings of 2 positions were added, the batch size",
    ),
    (
        "def embed(codes, table, pe):\n    return table[codes] * math.sqrt(table.size(1)) + pe[:, : codes.size(1)]",
        "and what was added to them do not line up",
    ),
]
MISTAKES["04_attention.attention"] += [
    (
        "def attention(Q, K, V):\n    w = torch.softmax(Q @ K.T / math.sqrt(Q.size(-1)), -1)\n    return w @ V, w",
        "K.T reverses every axis of K, (2, 5, 8) here",
    ),
    (
        "def attention(Q, K, V):\n    w = torch.softmax(Q @ K / math.sqrt(Q.size(-1)), -1)\n    return w @ V, w",
        "the shapes did not line up: Q is (2, 3, 8)",
    ),
]
MISTAKES["04_attention.masked_attention"] += [
    (  # the instructions' nan_to_num turns the NaN of an inverted mask into zeros
        _MASKED.replace("masked_fill(mask,", "masked_fill(~mask,"),
        "all 30 weights at keys the mask allows (False) are zero: the mask is inverted",
    ),
    (_MASKED.replace("float('-inf')", "-10.0"), "though the mask hides that key (True there)"),
    (
        _MASKED.replace("s.masked_fill(mask, float('-inf'))", "s + mask.float() * float('-inf')"),
        "a query that may see some key spreads a total weight of one",
    ),
]
MISTAKES["04_attention.split_heads"] += [
    (
        "def split_heads(x, n_heads):\n"
        "    B, L, d = x.shape\n"
        "    return x.transpose(1, 2).view(B, n_heads, L, d // n_heads)",
        "view never moves values",
    ),
]
MISTAKES["04_attention.multi_head_attention"] += [
    (  # a (B, 1, Lk) mask: an error where B and H differ, the wrong mask per head where they are equal
        _MHA.replace("key_pad_mask[:, None, None, :]", "key_pad_mask[:, None, :]"),
        "the padding mask (2, 6), (B, Lk), must broadcast against the scores of every head",
    ),
    (
        _MHA.replace("key_pad_mask[:, None, None, :]", "key_pad_mask[:, None, :]"),
        "the padding mask was (B, 1, Lk)",
    ),
    (
        _MHA.replace("mha.split_heads(mha.q_proj(query))", "mha.split_heads(mha.q_proj(query), mha.n_heads)"),
        "the module's split_heads takes the tensor only",
    ),
    (_MHA.replace(".reshape(B, Lq, d)", ".view(B, Lq, d)"), "Join the heads after the head axis is back"),
    (
        _MHA.replace("mha.k_proj(key)", "mha.k_proj(query)").replace(
            "mha.v_proj(value)", "mha.v_proj(query)"
        ),
        "the keys and values come from the key and value inputs (Lk = 6 here)",
    ),
]
MISTAKES["05_transformer.encoder_layer_forward"] += [
    (
        "def encoder_layer_forward(layer, x, src_pad_mask):\n"
        "    h = layer.norm1(x)\n"
        "    x = x + layer.self_attn(h, h, h, src_pad_mask)\n"
        "    return x + layer.feed_forward(layer.norm2(x))",
        "an attention sublayer returns a pair (output, weights)",
    ),
]
MISTAKES["05_transformer.decoder_layer_forward"] += [
    (  # an error where the source is longer than the target, wrong numbers where they are as long
        _DECODER.replace("memory, memory, src_pad_mask", "memory, memory, tgt_pad_mask"),
        "the cross-attention's keys are the memory's positions, the source's: its padding mask is",
    ),
    (
        _DECODER.replace("memory, memory, src_pad_mask", "memory, memory, tgt_pad_mask"),
        "the cross-attention got the target's padding mask",
    ),
    (
        _DECODER.replace("h, h, h, tgt_pad_mask", "h, h, h, src_pad_mask"),
        "the self-attention's keys are the layer's own positions",
    ),
]
MISTAKES["05_transformer.teacher_forcing_loss"] += [
    (
        _LOSS.replace("tgt[:, 1:].flatten()", "tgt[:, :-1].flatten()"),
        "the decoder read the target without its last token, as it should, but each position was scored",
    ),
    (
        _LOSS.replace(
            "tgt[:, :-1], src_pad_mask, tgt_pad_mask[:, :-1])", "tgt, src_pad_mask, tgt_pad_mask)[:, 1:]"
        ),
        "the decoder read the whole target, and from position 1 on",
    ),
    (
        _LOSS.replace("logits.flatten(0, 1), tgt[:, 1:].flatten()", "logits, tgt[:, 1:]"),
        "cross_entropy takes the logits as (N, V)",
    ),
    (_LOSS.replace("tgt_pad_mask[:, :-1]", "tgt_pad_mask"), "the target's padding mask is cut the same way"),
]
MISTAKES["05_transformer.training_step"] += [
    (
        _STEP.replace("for group in optimizer.param_groups:\n        group['lr'] = lr", "optimizer.lr = lr"),
        "the optimizer's learning rate is still the one it had before the step",
    ),
    (
        _STEP.replace("    for group in optimizer.param_groups:\n        group['lr'] = lr\n", "").replace(
            "    return loss.item()",
            "    for group in optimizer.param_groups:\n        group['lr'] = lr\n    return loss.item()",
        ),
        "the step was taken with the optimizer's old learning rate",
    ),
    (
        _STEP.replace("tgt[:, 1:].flatten()", "tgt[:, :-1].flatten()"),
        "this loss is too low for a model that predicts",
    ),
]
MISTAKES["06_translation.greedy_translate"] += [
    (
        _GREEDY.replace("for _ in range(max_len):", "while True:"),
        "the loop went on past max_len = 12 new tokens",
    ),
    (
        _GREEDY.replace("[0, -1].argmax()", ".argmax()"),
        "a code outside the target vocabulary reached the model",
    ),
]
MISTAKES["06_translation.series_log_probability"] += [
    (
        "def series_log_probability(model, source, series):\n"
        "    src = torch.tensor([code(source, SOURCE_VOCAB)])\n"
        "    tgt = torch.tensor([code(series, TARGET_VOCAB)])\n"
        "    log_p = model(src, tgt[:, 1:]).log_softmax(dim=-1)\n"
        "    return log_p[0].gather(1, tgt[0, 1:, None]).sum().item()",
        "the decoder read the series without <sos>",
    ),
]

# Mistakes that reach the remaining messages: each message of a check is seen by some test (test_hints).
MISTAKES["01_tokenization.split_tokens"] += [
    (  # the vocabulary's idea of "each token once", applied to a text
        f"def split_tokens(text):\n    return list(dict.fromkeys(re.findall(r'{_PATTERN}', text)))",
        "'(' appears 2 times in the text and 1 times in your tokens",
    ),
    (
        f"def split_tokens(text):\n    return sorted(re.findall(r'{_PATTERN}', text))",
        "the right tokens, in another order",
    ),
    (
        f"def split_tokens(text):\n    return re.findall(r'{_PATTERN}', text) + ['<eos>']",
        "'<eos>' is no piece of the text",
    ),
    (
        f"def split_tokens(text):\n    return re.findall(r'{_PATTERN}', text) * 2",
        "compare your pattern with the list",
    ),
]
MISTAKES["01_tokenization.split_tokens"] += [  # patterns that do not compile
    (_tokenizer(_PATTERN.replace(r"[()*+\-/]", r"[()+-*/]")), "and +-* runs backwards (at position 63"),
    (_tokenizer(_PATTERN.replace(r"O\(x\*\*6\)", r"O\(x**6\)")), "has nothing it may repeat"),
    (_tokenizer(_PATTERN.replace(r"O\(x\*\*6\)", r"O(x\*\*6")), "( and ) open and close a group"),
    (_tokenizer(_PATTERN.replace(r"[()*+\-/]", r"[()*+\-/")), "the pattern does not compile (unterminated"),
]
MISTAKES["02_coding_and_padding.pad_codes"] += [
    (
        "def pad_codes(codes, length, layout='package'):\n"
        "    if len(codes) > length:\n"
        "        raise ValueError('too long')\n"
        "    return list(codes) + [0] * (length - len(codes))",
        "this is the package's layout; layout='lecture' asks for <sos> tokens <pad> … <eos>",
    ),
]
MISTAKES["02_coding_and_padding.make_batch"] += [
    (
        "def make_batch(sequences):\n"
        "    L = max(len(s) for s in sequences)\n"
        "    return torch.tensor([list(s) + [0] * (L - len(s)) for s in sequences])",
        "the instructions ask for a pair (codes, mask)",
    ),
    (
        "def make_batch(sequences):\n"
        "    L = max(len(s) for s in sequences)\n"
        "    codes = torch.tensor([list(s[:-1]) + [0] * (L - len(s)) + [2] for s in sequences])\n"
        "    return codes, codes == 0",
        "use the package's layout here",
    ),
]
MISTAKES["03_embedding.sinusoidal_encoding"] += [
    (
        "def sinusoidal_encoding(max_len, d_model):\n"
        "    angle = torch.arange(max_len)[:, None] / 10000 ** (torch.arange(0, d_model, 2) / d_model)\n"
        "    pe = torch.zeros(max_len, d_model)\n"
        "    pe[:, 0::2], pe[:, 1::2] = torch.sin(angle), torch.cos(angle)\n"
        "    return pe.T",
        "this is (d_model, max_len)",
    ),
]
MISTAKES["03_embedding.embed"] += [
    (
        "def embed(codes, table, pe):\n    return table[codes] * table.size(1) + pe[: codes.size(1)]",
        "the scale is √d_model, not d_model",
    ),
]
MISTAKES["04_attention.attention"] += [
    (
        "def attention(Q, K, V):\n"
        "    s = Q @ K.transpose(-2, -1) / math.sqrt(Q.size(-1))\n"
        "    return s @ V, torch.softmax(s, -1)",
        "the weights are right but out is not: each query's output",
    ),
]
MISTAKES["04_attention.masked_attention"] += [
    (
        "def masked_attention(Q, K, V, mask):\n"
        "    s = (Q @ K.transpose(-2, -1) / math.sqrt(Q.size(-1))).masked_fill(mask, float('-inf'))\n"
        "    w = torch.nan_to_num(torch.softmax(s, -1))\n"
        "    return torch.nan_to_num(torch.softmax(s, -2)) @ V, w",
        "the weights are right but out is not: each query's output",
    ),
]
MISTAKES["04_attention.split_heads"] += [
    (
        "def split_heads(x, n_heads):\n"
        "    B, L, d = x.shape\n"
        "    return x.view(B, L, n_heads, d // n_heads).permute(0, 2, 3, 1)",
        "head h holds features h*d_head",
    ),
]
MISTAKES["04_attention.multi_head_attention"] += [
    (  # the residual connection belongs to the layer, not to attention
        _MHA.replace("), w", ") + query, w"),
        "the weights are right but out is not: each head's output",
    ),
]
MISTAKES["05_transformer.decoder_layer_forward"] += [
    (  # the pair of the package's layer (and the attention sublayers) returned
        _DECODER.replace(
            "return x + layer.feed_forward(layer.norm3(x))",
            "return x + layer.feed_forward(layer.norm3(x)), None",
        ),
        "return the new x alone, a tensor of the shape of x, (2, 4, 16)",
    ),
]
MISTAKES["05_transformer.decoder_layer_forward"] += [
    (
        _DECODER.replace("return x + layer", "x = x + layer"),
        "returned None. Hint: a function without a return",
    ),
]
MISTAKES["04_attention.causal_mask"] += [
    (
        "def causal_mask(L):\n    mask = torch.ones(L, L, dtype=torch.bool).triu(diagonal=1)",
        "your function returned None",
    ),
]
MISTAKES["05_transformer.encoder_layer_forward"] += [
    (
        "def encoder_layer_forward(layer, x, src_pad_mask):\n"
        "    a, _ = layer.self_attn(x, x, x, src_pad_mask)\n"
        "    x = x + a\n"
        "    return x + layer.feed_forward(x)",
        "the sublayers read x itself: in a pre-norm layer each sublayer reads a normalized copy",
    ),
]
MISTAKES["05_transformer.decoder_layer_forward"] += [
    (
        _DECODER.replace("memory, memory, src_pad_mask)", "memory, memory, src_pad_mask, causal=True)"),
        "the cross-attention was causal",
    ),
    (
        _DECODER.replace("h = layer.norm1(x)", "h = x")
        .replace("h = layer.norm2(x)", "h = x")
        .replace("layer.norm3(x)", "x"),
        "the sublayers read x itself",
    ),
]
MISTAKES["03_embedding.project_2d"] += [
    (  # a randomised approximation, with its default two iterations
        "def project_2d(X):\n    U, S, V = torch.pca_lowrank(X, q=2)\n    return (X - X.mean(0)) @ V",
        "your coordinates point nearly along the principal axes",
    ),
]
MISTAKES["01_tokenization.build_vocabulary"] += [
    (
        "def build_vocabulary(token_lists):\n"
        "    vocab = {'<pad>': 0, '<sos>': 1, '<eos>': 2}\n"
        "    for t in sorted({t for ts in token_lists for t in ts}):\n"
        "        vocab[t] = len(vocab)\n"
        "    return vocab",
        "'<sos>' appears in the input and got the code 5",
    ),
]
MISTAKES["05_transformer.teacher_forcing_loss"] += [
    (
        _LOSS.replace("ignore_index=PAD_IDX)", "ignore_index=PAD_IDX, reduction='sum')"),
        "this is the sum over tokens",
    ),
    (
        _LOSS.replace("ignore_index=PAD_IDX)", "ignore_index=PAD_IDX, reduction='none')"),
        "the loss is one number, a 0-dimensional tensor",
    ),
]
MISTAKES["05_transformer.training_step"] += [
    (
        _STEP.replace("min(1.0, (step + 1) / warmup_steps)", "step / warmup_steps"),
        "this is not the rate of this step",
    ),
    (
        _STEP.replace(
            "    return loss.item()",
            "    logits = model(src, tgt[:, :-1], spm, tpm[:, :-1])\n"
            "    return F.cross_entropy(logits.flatten(0, 1), tgt[:, 1:].flatten(), ignore_index=PAD_IDX).item()",
        ),
        "this is the loss after the step",
    ),
]
MISTAKES["06_translation.greedy_translate"] += [
    (_GREEDY.replace("range(max_len)", "range(max_len + 1)"), "one token too many: stop after max_len = 12"),
    (
        _GREEDY.replace("range(max_len)", "range(max_len - 1)"),
        "one token too few: generate up to max_len = 12",
    ),
    (
        _GREEDY.replace("TARGET_VOCAB.decode(ys[0, 1:].tolist())", "TARGET_VOCAB.tokens_of(ys[0, 1:])"),
        "return the series as text",
    ),
    (  # the text spelled from the vocabulary's tokens, <eos> appended before the loop stops
        _GREEDY.replace(
            "        if next_token == EOS_IDX:\n            break\n        ys = torch.cat([ys, next_token.view(1, 1)], dim=1)",
            "        ys = torch.cat([ys, next_token.view(1, 1)], dim=1)\n        if next_token == EOS_IDX:\n            break",
        ).replace(
            "TARGET_VOCAB.decode(ys[0, 1:].tolist())", "''.join(TARGET_VOCAB.itos[c] for c in ys[0, 1:])"
        ),
        "leave <eos> out of the text",
    ),
    (  # sampling, not the most likely token
        _GREEDY.replace(
            "model.decode(ys, memory)[0, -1].argmax()",
            "torch.multinomial(model.decode(ys, memory)[0, -1].softmax(-1), 1)[0]",
        ),
        "compare your loop with the steps above the exercise",
    ),
]
MISTAKES["06_translation.series_log_probability"] += [
    (
        "def series_log_probability(model, source, series):\n"
        "    src = torch.tensor([code(source, SOURCE_VOCAB)])\n"
        "    tgt = torch.tensor([code(series, TARGET_VOCAB)])\n"
        "    p = model(src, tgt[:, :-1]).softmax(dim=-1)\n"
        "    return p[0].gather(1, tgt[0, 1:, None]).sum().item()",
        "add log-probabilities (log_softmax), not probabilities",
    ),
]

MISTAKES.update(gpt_mistakes.MISTAKES)  # notebook 07's


def test_every_exercise_has_a_mistake_test():
    assert sorted(MISTAKES) == GRADE_IDS
    for grade_id, mistakes in MISTAKES.items():
        hints = [hint for _, hint in mistakes]
        assert len(set(hints)) == len(hints) >= 3, f"{grade_id}: at least three mistakes, each its own hint"


#: What a hint may say about code: names, numbers and operators, never three in a row of the answer's code.
_CODE_TOKEN = re.compile(r"<(?:pad|sos|eos)>|[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*|\d+|\*\*|//|==|!=|<=|>=|[^\w\s]")
_SEPARATORS = set("()[]{},'\"`")


def code_tokens(text: str) -> list[str]:
    """The tokens of ``text`` as code reads it: ``F.cross_entropy(x, ignore_index=PAD_IDX)`` gives
    ``F.cross_entropy x ignore_index = PAD_IDX``; brackets, commas and quotes only separate."""
    return [token for token in _CODE_TOKEN.findall(text) if token not in _SEPARATORS]


def reference_code(grade_id: str) -> list[str]:
    """The code tokens of the reference answer of ``grade_id``: its solution region without comments,
    docstrings and messages (a string with a space in it is prose; a pattern such as ``r"sinh|cosh"`` is code)."""
    region = REFERENCE[grade_id].split(release.BEGIN_SOLUTION)[1].split(release.END_SOLUTION)[0]
    tokens = []
    for token in tokenize.generate_tokens(io.StringIO(dedent(region)).readline):
        if token.type == tokenize.COMMENT or (token.type == tokenize.STRING and " " in token.string):
            continue
        tokens += code_tokens(token.string)
    return tokens


def every_hint(grade_id: str, monkeypatch) -> set[str]:
    """Every hint the check of ``grade_id`` holds for its cases: the typical mistakes' and the default ones,
    and the hints of the failures it reports (an explainer's too), gathered while it judges the reference and
    the typical mistakes."""
    from labutils.checks import compare

    hints: set[str] = set()
    function = checks.EXERCISES[grade_id].function
    module = importlib.import_module(getattr(checks, function).judge.__module__)  # where its judge is
    original_expect, original_fail = compare.expect, compare.fail

    def expect(got, expected, what, hint="", mistakes=(), *args, **kwargs):
        hints.update([hint] if hint else [])
        hints.update(h for _, h in mistakes)
        return original_expect(got, expected, what, hint, mistakes, *args, **kwargs)

    def fail(message):
        if "Hint: " in message:
            hints.add(message.split("Hint: ", 1)[1])
        return original_fail(message)

    monkeypatch.setattr(module, "expect", expect)
    monkeypatch.setattr(module, "fail", fail, raising=False)
    monkeypatch.setattr(compare, "fail", fail)
    for source in [REFERENCE[grade_id], *(source for source, _ in MISTAKES[grade_id])]:
        result = run_check(grade_id, define(source, function))
        # and the hints of the exceptions the answers raised (an explainer's)
        hints.update(o.message.split("Hint: ", 1)[1] for o in result.outcomes if "Hint: " in o.message)
    return hints


@pytest.mark.parametrize("grade_id", GRADE_IDS)
def test_no_hint_holds_three_code_tokens_in_a_row_of_the_answer(grade_id, monkeypatch):
    """A hint says what is wrong and which idea to revisit, never the code to write."""
    answer = reference_code(grade_id)
    triples = {tuple(answer[i : i + 3]) for i in range(len(answer) - 2)}
    hints = every_hint(grade_id, monkeypatch)
    assert len(hints) >= 3, hints
    for hint in hints:
        words = code_tokens(hint)
        for i in range(len(words) - 2):
            assert tuple(words[i : i + 3]) not in triples, (
                f"{grade_id}: the hint {hint!r} gives away {' '.join(words[i : i + 3])!r} of the answer"
            )


def test_the_token_rule_catches_code_in_a_hint():
    answer = reference_code("05_transformer.teacher_forcing_loss")
    triples = {tuple(answer[i : i + 3]) for i in range(len(answer) - 2)}
    given_away = code_tokens("use F.cross_entropy(…, ignore_index=PAD_IDX)")
    assert any(tuple(given_away[i : i + 3]) in triples for i in range(len(given_away) - 2))
    said = code_tokens("the <pad> positions counted in the mean")
    assert not any(tuple(said[i : i + 3]) in triples for i in range(len(said) - 2))


@pytest.mark.parametrize("grade_id", GRADE_IDS)
def test_every_solution_and_hidden_test_is_a_secret_of_the_release(grade_id):
    """The release's leak check looks for every exercise's solution, the new ones included."""
    secrets = release.secrets(SOLUTIONS)
    solution = release._squeeze(
        REFERENCE[grade_id].split(release.BEGIN_SOLUTION)[1].split(release.END_SOLUTION)[0]
    )
    assert solution in secrets.values()
    assert release._squeeze(STUBS[grade_id]).count("raise NotImplementedError()") == 1
    assert solution not in release._squeeze(STUBS[grade_id])


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


def test_a_hidden_tests_pair_is_drawn_again_when_the_family_rejects_it_or_its_series_is_too_long(monkeypatch):
    import random

    from labutils import data
    from labutils.checks.core import family_pair

    real, calls = data.pair_of, []

    def rejects_the_first(draw):
        calls.append(draw)
        if len(calls) == 1:
            raise data.Rejected("does not depend on x")
        return real(draw)

    monkeypatch.setattr(data, "pair_of", rejects_the_first)
    source, series = family_pair(random.Random(3), max_series_tokens=20)
    assert len(calls) >= 2 and (source, series) == real(calls[-1])
    assert len(labutils.tokenize(series)) <= 20
