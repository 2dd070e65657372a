"""Checks of notebook 03, embedding: ``sinusoidal_encoding`` (3.1), ``embed`` (3.2), ``project_2d`` (3.3)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from labutils import model as _model
from labutils import tokens as _tokens
from labutils.checks.coding_and_padding import SLIDE_CODES
from labutils.checks.compare import broadcast_sizes, expect
from labutils.checks.core import Case, exercise, hidden_test, integer, tiny_model
from labutils.tokens import SOURCE_VOCAB

# ----------------------------------------------------------------------------------- 3.1 sinusoidal_encoding


def _sinusoid(max_len: int, d_model: int) -> torch.Tensor:
    return _model.SinusoidalPositionalEncoding(d_model, max_len).pe.clone()


def _sinusoid_mistakes(max_len: int, d_model: int):
    position = torch.arange(max_len, dtype=torch.float32)[:, None]

    def angles(exponent, position=position, width=d_model):
        return position / 10000 ** (exponent / width)

    def interleave(even, odd):
        pe = torch.zeros(max_len, d_model)
        pe[:, 0::2], pe[:, 1::2] = even, odd
        return pe

    pairs = torch.arange(0, d_model, 2, dtype=torch.float32)  # 2i
    columns = torch.arange(d_model, dtype=torch.float32)
    return [
        (
            lambda: _sinusoid(max_len, d_model).T,
            "this is (d_model, max_len): the encoding has one row per position and one column per feature, "
            "(max_len, d_model)",
        ),
        (
            lambda: interleave(torch.cos(angles(pairs)), torch.sin(angles(pairs))),
            "sin and cos are swapped: sin goes in the even columns 0, 2, 4 …, cos in the odd ones",
        ),
        (
            lambda: interleave(torch.sin(angles(pairs / 2)), torch.cos(angles(pairs / 2))),
            "the exponents are half what they should be: the exponent is 2i/d_model, twice the number i "
            "of the sin/cos pair, so the wavelengths grow too slowly along the columns",
        ),
        (
            lambda: interleave(torch.sin(angles(columns[0::2])), torch.cos(angles(columns[1::2]))),
            "columns 2i and 2i+1 share one frequency: the cos column 2i+1 also uses the exponent "
            "2i/d_model, not (2i+1)/d_model",
        ),
        (
            lambda: interleave(
                *(f(position.double() * 10000 ** (pairs.double() / d_model)) for f in (torch.sin, torch.cos))
            ),
            "the angles grow along the columns instead of shrinking: the position is divided by "
            "10000^(2i/d_model), not multiplied (in the exponential form, mind the sign of the exponent)",
        ),
        (
            lambda: torch.cat([torch.sin(angles(pairs)), torch.cos(angles(pairs))], dim=1),
            "all the sines came first, then all the cosines: the columns alternate, a sine in each even "
            "column and the cosine of the same angle in the odd column after it",
        ),
        (
            lambda: interleave(
                torch.sin(angles(pairs, position + 1)), torch.cos(angles(pairs, position + 1))
            ),
            "the first row is position 1: positions count from 0, and row 0 is sin(0) = 0, cos(0) = 1",
        ),
        (
            lambda: interleave(torch.sin(angles(pairs // d_model)), torch.cos(angles(pairs // d_model))),
            "every column has the same wavelength: 2i/d_model was rounded down to 0, as integer division "
            "does; the exponent is a fraction between 0 and 1",
        ),
        (
            lambda: interleave(
                torch.sin(angles(pairs, width=max_len)), torch.cos(angles(pairs, width=max_len))
            ),
            "the exponent divides 2i by the number of positions; it divides by d_model, the width of "
            "the encoding",
        ),
    ]


def _sinusoidal_cases() -> dict[str, Case]:
    return {
        "4 positions, d_model = 6": Case((4, 6)),
        "the model's source encoding: 64 positions, d_model = 128": Case((64, 128)),
        "one position, d_model = 2": Case((1, 2)),
    }


_SINUSOIDS_REPLACES = ("labutils.model.SinusoidalPositionalEncoding",)


@exercise("03_embedding.sinusoidal_encoding", "3.1", 2, _SINUSOIDS_REPLACES, cases=_sinusoidal_cases)
def sinusoidal_encoding(args: tuple, got) -> None:
    max_len, d_model = args
    expect(
        got,
        _sinusoid(max_len, d_model),
        f"sinusoidal_encoding({max_len}, {d_model})",
        mistakes=_sinusoid_mistakes(max_len, d_model),
        atol=1e-4,
        mistake_atol=1e-3,  # the angles of a mistake may reach 1e3 rad: float32 rounding shows in sin
    )


# ------------------------------------------------------------------------------------------------- 3.2 embed


def _embed_mistakes(codes: torch.Tensor, table: torch.Tensor, pe: torch.Tensor):
    B, L, d = codes.size(0), codes.size(1), table.size(1)
    return [
        (
            lambda: table[codes] + pe[:L],
            "the embeddings were not scaled: multiply them by √d_model before adding the encodings",
        ),
        (
            lambda: table[codes] * math.sqrt(d),
            "the positional encodings are missing: each position's encoding is added to its token's vector",
        ),
        (lambda: table[codes] * d + pe[:L], "the scale is √d_model, not d_model"),
        (
            lambda: table[codes] / math.sqrt(d) + pe[:L],
            "the embeddings were divided by √d_model; they are multiplied (1/√d is attention's scale)",
        ),
        (
            lambda: (table[codes] + pe[:L]) * math.sqrt(d),
            "the positional encodings were scaled too: only the embeddings are multiplied by √d_model",
        ),
        (
            lambda: table[codes] * math.sqrt(table.size(0)) + pe[:L],
            "the scale used the vocabulary size (the table's rows); d_model is the width of a vector, "
            "the table's columns",
        ),
        (
            lambda: table[codes] * math.sqrt(d) + pe[:B],
            "every position got the encoding of position 0: the encodings go by position along the "
            "sequence (its length L, the second axis of codes), not by the batch",
        ),
    ]


def _embed_cases() -> dict[str, Case]:
    model = tiny_model()
    table, pe = model.src_embed.weight.detach(), model.src_pos.pe
    slide = torch.tensor([SLIDE_CODES])
    batch, _ = _tokens.pad_batch([_tokens.code("cosh(a*x)**3+tanh(b*x)", SOURCE_VOCAB), SLIDE_CODES])
    return {
        "the slide's sequence": Case((slide, table, pe)),
        "a padded batch of two": Case((batch, table, pe)),
    }


def _explain_embed(args: tuple, error: str) -> str | None:
    """A broadcast error: encodings of the wrong number of positions added to the token vectors."""
    codes, table, pe = args
    sizes = broadcast_sizes(error)
    if sizes is None:
        return None
    B, L = codes.shape
    if pe.size(0) in sizes and L in sizes:
        return (
            f"pe holds the encodings of {pe.size(0)} positions, and the sequences have {L}: add those of "
            f"the first {L} positions only, one per position of the sequence"
        )
    if B in sizes and L in sizes:
        return (
            f"the encodings of {B} positions were added, the batch size: the positions run along the "
            f"second axis of codes, so a sequence of length {L} takes the encodings of positions 0 … {L - 1}"
        )
    return (
        f"the token vectors, (B, L, d_model) = {(B, L, table.size(1))}, and what was added to them do not "
        "line up: add one encoding per position, (L, d_model), which broadcasts over the batch"
    )


@exercise(
    "03_embedding.embed",
    "3.2",
    2,
    ("labutils.model.Seq2SeqTransformer.encode",),
    cases=_embed_cases,
    explain=_explain_embed,
)
def embed(args: tuple, got) -> str:
    codes, table, pe = args
    # What the model's encoder does first (Seq2SeqTransformer.encode): look up, scale by √d_model, add.
    expected = F.embedding(codes, table) * math.sqrt(table.size(1)) + pe[: codes.size(1)]
    expect(got, expected, "embed(codes, table, pe)", mistakes=_embed_mistakes(codes, table, pe))
    return f"shape {tuple(expected.shape)}"


# -------------------------------------------------------------------------------------------- 3.3 project_2d


def _pca(X: torch.Tensor) -> torch.Tensor:
    centred = X - X.mean(dim=0)
    _, _, Vh = torch.linalg.svd(centred.double(), full_matrices=False)
    return (centred.double() @ Vh[:2].T).to(X.dtype)


def _pca_about(X: torch.Tensor, centre: torch.Tensor) -> torch.Tensor:
    """The first two principal coordinates of ``X - centre`` (a wrong centre, for the mistakes)."""
    shifted = (X - centre).double()
    return (shifted @ torch.linalg.svd(shifted, full_matrices=False)[2][:2].T).to(X.dtype)


def _align_signs(got: torch.Tensor, expected: torch.Tensor) -> torch.Tensor:
    """Principal axes have no sign of their own: flip each column of ``got`` to point like ``expected``.

    (A mistake's result is aligned with the answer's, not with the reference: two principal columns are
    orthogonal, so a column compared with the other one would get a random sign.)
    """
    signs = torch.sign((got.double() * expected.double()).sum(dim=0))
    return got * torch.where(signs == 0, 1.0, signs).to(got.dtype)


def _project_2d_cases() -> dict[str, Case]:
    g = torch.Generator().manual_seed(3)
    cloud = torch.randn(8, 3, generator=g) * torch.tensor([5.0, 2.0, 0.1]) + torch.tensor([10.0, -4.0, 1.0])
    table = (
        torch.randn(37, 4, generator=g)
        @ torch.randn(4, 64, generator=g)
        * torch.tensor([3.0, 2.0, 1.0, 0.5]).repeat(16)
    )
    return {"8 points in 3-D, off the origin": Case((cloud,)), "37 token vectors in 64-D": Case((table,))}


def _nearly_hint(got, expected: torch.Tensor) -> str | None:
    """A hint when each column of ``got`` points nearly along the right axis (an approximate method)."""
    if not isinstance(got, torch.Tensor) or got.shape != expected.shape or not got.is_floating_point():
        return None
    cosines = F.cosine_similarity(got.double(), expected.double(), dim=0).abs()  # one per axis
    spreads = got.double().norm(dim=0) / expected.double().norm(dim=0)  # 1: the spread along each axis kept
    if not bool((cosines > 0.9).all() and ((spreads - 1).abs() < 0.1).all()):
        return None
    return (
        f"your coordinates point nearly along the principal axes (their cosines with them: "
        f"{', '.join(f'{c:.4f}' for c in cosines.tolist())}) but are not the same: the projection is exact, "
        "from the singular value decomposition of the centred points; a randomised approximation, such as "
        "torch.pca_lowrank with few iterations, only comes near it"
    )


@exercise("03_embedding.project_2d", "3.3", 1, cases=_project_2d_cases)
def project_2d(args: tuple, got) -> str:
    (X,) = args
    expected = _pca(X)
    if isinstance(got, torch.Tensor) and got.shape == expected.shape:
        got = _align_signs(got, expected)
    centred = X - X.mean(0)
    _, _, Vh = torch.linalg.svd(centred.double())  # (d, d): the axes, by decreasing spread
    expect(
        got,
        expected,
        "project_2d(X)",
        hint=_nearly_hint(got, expected) or "",
        atol=1e-3,
        rtol=1e-3,
        mistakes=[
            (
                lambda: _align_signs(X @ torch.linalg.svd(X, full_matrices=False)[2][:2].T, got),
                "the points were not centred: PCA measures the spread about the mean point, which is subtracted "
                "first",
            ),
            (
                lambda: _align_signs(torch.linalg.svd(centred, full_matrices=False)[0][:, :2], got),
                "these coordinates have unit length along each axis (the columns of U): the projection "
                "keeps each axis's spread, the singular values S",
            ),
            *(
                (  # mixes the axes: as the answer's own svd call would, signs and all
                    lambda full=full: _align_signs(
                        centred @ torch.linalg.svd(centred, full_matrices=full)[2][:, :2], got
                    ),
                    "these axes are columns of Vh: torch.linalg.svd returns Vᵀ, so the principal "
                    "axes are its rows",
                )
                for full in (True, False)
            ),
            (
                lambda: _align_signs(centred.double() @ Vh[[-1, -2]].T, got),
                "these are the two axes of least spread: torch.linalg.eigh sorts the eigenvalues "
                "in ascending order, so the principal axes are its last columns",
            ),
            (
                lambda: _align_signs(expected[:, [1, 0]], got),
                "the two axes are in the wrong order: the first column is the axis of largest "
                "spread (eigh sorts from the least spread to the largest)",
            ),
            (
                lambda: _align_signs(_pca_about(X, X.mean()), got),
                "the points were centred by one number, the mean of every entry: each feature (column) "
                "has a mean of its own, and PCA subtracts the mean point",
            ),
            (
                lambda: _align_signs(_pca_about(X, X.mean(dim=1, keepdim=True)), got),
                "each point was centred by its own mean (over its features); PCA subtracts the mean "
                "point, the mean over the rows",
            ),
        ],
    )
    return "equal up to the sign of each axis"


# ------------------------------------------------------------------------------------------------ hidden tests
# Inputs the grader draws from the secret of its grading run: they vary what the visible cases fix.


@hidden_test(
    "03_embedding.sinusoidal_encoding", "any number of positions and any even d_model give the encoding"
)
def any_size(generator) -> Case:
    return Case((integer(generator, 1, 50), 2 * integer(generator, 1, 24)))


@hidden_test(
    "03_embedding.embed", "a batch of any size is looked up, scaled by √d_model and given its positions"
)
def any_batch(generator) -> Case:
    d_model, vocabulary = 2 * integer(generator, 2, 8), integer(generator, 5, 20)
    table, pe = (
        torch.randn(vocabulary, d_model, generator=generator),
        torch.randn(40, d_model, generator=generator),
    )
    codes = torch.randint(
        0, vocabulary, (integer(generator, 1, 3), integer(generator, 1, 12)), generator=generator
    )
    return Case((codes, table, pe))


@hidden_test(
    "03_embedding.project_2d", "a cloud of points anywhere in space is projected onto its two main directions"
)
def a_cloud_anywhere(generator) -> Case:
    n, d = integer(generator, 10, 40), integer(generator, 3, 8)
    scales = torch.linspace(5.0, 0.1, d)
    return Case((torch.randn(n, d, generator=generator) * scales + 20 * torch.randn(d, generator=generator),))
