"""Exercise checks: full points for the reference, 0 for a stub or a call of the package, hints for mistakes.

The reference answers are the answer cells of ``solutions/``, the stubs those of their student versions: the
tests read them from the notebooks, so they test what students get.
"""

from __future__ import annotations

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
from labutils import checks, release
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
    function = checks.EXERCISES[grade_id].function
    stub = define(STUBS[grade_id], function)
    with pytest.raises(
        NotImplementedError, match=rf"Exercise {checks.EXERCISES[grade_id].number}: write {function}"
    ):
        stub(*([None] * stub.__code__.co_argcount))
    result = run_check(grade_id, stub)
    assert result.points == 0 and result.not_attempted and result.passed == []
    assert result.failed, "a stub fails every test"
    assert "not attempted yet" in result.payload()["feedback"]


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
        "    return labutils.attention.MultiHeadAttention(x.size(-1), n_heads)._split(x)"
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
    originals = (labutils.tokenize, labutils.tokens.tokenize, labutils.data.tokenize, labutils.tokens._TOKEN)
    run_check("01_tokenization.split_tokens", define(CHEATS["01_tokenization.split_tokens"], "split_tokens"))
    assert (
        labutils.tokenize,
        labutils.tokens.tokenize,
        labutils.data.tokenize,
        labutils.tokens._TOKEN,
    ) == originals
    assert labutils.tokenize("sin(x)") == ["sin", "(", "x", ")"]


# Subtly wrong answers: partial or no points, and the hint that names the mistake.
MISTAKES = {
    "01_tokenization.split_tokens": (
        "def split_tokens(text):\n"
        "    pattern = r'O\\(x\\*\\*6\\)|sin|cos|tan|exp|sinh|cosh|tanh|\\*\\*|[a-z]|[0-9]|[()*+\\-/]'\n"
        "    return re.findall(pattern, text)",
        "cosh was read as cos then h",
    ),
    "01_tokenization.build_vocabulary": (
        "def build_vocabulary(token_lists):\n"
        "    return {t: i for i, t in enumerate(sorted({t for ts in token_lists for t in ts}))}",
        "special tokens come first",
    ),
    "02_coding_and_padding.encode": (
        "def encode(text, stoi):\n    return [stoi[t] for t in labutils.tokenize(text)]",
        "delimit the sequence",
    ),
    "02_coding_and_padding.pad_codes": (
        "def pad_codes(codes, length, layout='package'):\n"
        "    return list(codes[:-1]) + [0] * (length - len(codes)) + [codes[-1]]",
        "this is the 'lecture' layout",
    ),
    "02_coding_and_padding.make_batch": (
        "def make_batch(sequences):\n"
        "    n = max(map(len, sequences))\n"
        "    codes = torch.tensor([list(s) + [0] * (n - len(s)) for s in sequences])\n"
        "    return codes, codes != 0",
        "the mask is inverted",
    ),
    "03_embedding.sinusoidal_encoding": (
        "def sinusoidal_encoding(max_len, d_model):\n"
        "    pos = torch.arange(max_len)[:, None].float()\n"
        "    angle = pos / 10000 ** (torch.arange(0, d_model, 2) / d_model)\n"
        "    pe = torch.zeros(max_len, d_model)\n"
        "    pe[:, 0::2], pe[:, 1::2] = torch.cos(angle), torch.sin(angle)\n"
        "    return pe",
        "sin and cos are swapped",
    ),
    "03_embedding.embed": (
        "def embed(codes, table, pe):\n    return table[codes] + pe[: codes.size(1)]",
        "multiply the embeddings by √d_model",
    ),
    "03_embedding.project_2d": (
        "def project_2d(X):\n    return X @ torch.linalg.svd(X, full_matrices=False)[2][:2].T",
        "centre the points first",
    ),
    "04_attention.attention": (
        "def attention(Q, K, V):\n"
        "    w = torch.softmax(Q @ K.transpose(-2, -1), dim=-1)\n    return w @ V, w",
        "divide the scores QKᵀ by √d",
    ),
    "04_attention.masked_attention": (
        "def masked_attention(Q, K, V, mask):\n"
        "    s = (Q @ K.transpose(-2, -1) / math.sqrt(Q.size(-1))).masked_fill(~mask, float('-inf'))\n"
        "    w = torch.softmax(s, -1)\n"
        "    return w @ V, w",
        "the mask is inverted",
    ),
    "04_attention.causal_mask": (
        "def causal_mask(L):\n    return torch.ones(L, L, dtype=torch.bool).triu()",
        "the diagonal is masked too",
    ),
    "04_attention.split_heads": (
        "def split_heads(x, n_heads):\n"
        "    B, L, d = x.shape\n    return x.reshape(B, n_heads, L, d // n_heads)",
        "mixes positions into heads",
    ),
    "05_transformer.encoder_layer_forward": (
        "def encoder_layer_forward(layer, x, src_pad_mask):\n"
        "    x = layer.norm1(x + layer.self_attn(x, x, x, src_pad_mask)[0])\n"
        "    return layer.norm2(x + layer.feed_forward(x))",
        "post-norm",
    ),
    "05_transformer.decoder_layer_forward": (
        "def decoder_layer_forward(layer, x, memory, src_pad_mask, tgt_pad_mask):\n"
        "    h = layer.norm1(x)\n"
        "    x = x + layer.self_attn(h, h, h, tgt_pad_mask)[0]\n"
        "    h = layer.norm2(x)\n"
        "    x = x + layer.cross_attn(h, memory, memory, src_pad_mask)[0]\n"
        "    return x + layer.feed_forward(layer.norm3(x))",
        "must be causal",
    ),
    "05_transformer.teacher_forcing_loss": (
        "def teacher_forcing_loss(model, src, tgt, src_pad_mask, tgt_pad_mask):\n"
        "    logits = model(src, tgt[:, :-1], src_pad_mask, tgt_pad_mask[:, :-1])\n"
        "    return F.cross_entropy(logits.flatten(0, 1), tgt[:, 1:].flatten())",
        "ignore_index",
    ),
    "06_translation.greedy_translate": (
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
    "06_translation.series_log_probability": (
        "def series_log_probability(model, source, series):\n"
        "    src = torch.tensor([code(source, SOURCE_VOCAB)])\n"
        "    tgt = torch.tensor([code(series, TARGET_VOCAB)])\n"
        "    logp = model(src, tgt[:, :-1]).log_softmax(-1)[0]\n"
        "    return logp[:-1].gather(1, tgt[0, 1:-1, None]).sum().item()",
        "count <eos> too",
    ),
}


def test_every_exercise_has_a_mistake_test():
    assert sorted(MISTAKES) == GRADE_IDS


@pytest.mark.parametrize("grade_id", sorted(MISTAKES))
def test_a_subtle_mistake_loses_points_with_a_hint_that_names_it(grade_id):
    source, hint = MISTAKES[grade_id]
    result = run_check(grade_id, define(source, checks.EXERCISES[grade_id].function))
    assert result.points < result.exercise.points and result.failed, result.feedback()
    assert not result.not_attempted
    assert hint in result.feedback(), result.feedback()
    assert "Hint:" in result.feedback()


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
    assert set(payload) == {"grade_id", "points", "max_points", "passed", "failed", "feedback"}
    assert payload["grade_id"] == grade_id and payload["max_points"] == checks.EXERCISES[grade_id].points
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
    assert "Exercise 4.3 (causal_mask): not attempted yet" in capsys.readouterr().out
