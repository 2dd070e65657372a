"""The data set: every target is sympy's series of its source; splits; generation is reproducible."""

import random

import pytest

from labutils import data, load_pairs
from labutils.series import format_series, sympy_series_coefficients, taylor_coefficients
from labutils.tokens import SOURCE_VOCAB, SYMBOLS, TARGET_VOCAB, tokenize

LECTURE_EXAMPLES = {
    "cosh(a*x)**3+tanh(b*x)": "1+b*x+3*a**2*x**2/2-b**3*x**3/3+7*a**4*x**4/8+2*b**5*x**5/15+O(x**6)",
    "tan(h*x)+sinh(g*x)": "x*(g+h)+x**3*(g**3/6+h**3/3)+x**5*(g**5/120+2*h**5/15)+O(x**6)",
}


def sympy_target(source: str) -> str:
    """The reference: sympy.series of the source, printed canonically."""
    return format_series(sympy_series_coefficients(data.parse_expression(source)))


@pytest.mark.parametrize("source, target", LECTURE_EXAMPLES.items())
def test_the_lectures_examples(source, target):
    assert sympy_target(source) == target
    assert format_series(taylor_coefficients(data.parse_expression(source))) == target


@pytest.mark.parametrize(
    "source",
    [
        "sin(b*x)**3/tanh(c*x)**3",  # Laurent: the denominator vanishes to third order
        "1/sin(a*x)",
        "exp(x*(c+d))",
        "exp(-b*x)*sin(c*x)",
        "cos(a*x)/sin(b*x)**3-exp(2*h*x)",
        "tanh(3*a*x)**3*exp(b*x)**2",
        "1/tan(a*x)**2+cosh(m*x)",
    ],
)
def test_fast_series_equals_sympy_on_hard_cases(source):
    expr = data.parse_expression(source)
    assert format_series(taylor_coefficients(expr)) == sympy_target(source)


def test_shipped_targets_are_sympys_series():
    rng = random.Random(0)
    sample = rng.sample(load_pairs("test"), 40) + rng.sample(load_pairs("structures"), 20)
    for source, target in sample:
        assert target == sympy_target(source), source


def test_fresh_targets_are_sympys_series():
    pairs, report = data.generate_pairs(40, seed=123, workers=2)
    assert report.made == 40 and len({s for s, _ in pairs}) == 40
    for source, target in pairs:
        assert target == sympy_target(source), source
        SOURCE_VOCAB.encode(tokenize(source))
        TARGET_VOCAB.encode(tokenize(target))


def test_shipped_data_set_size_and_disjoint_splits():
    splits = {name: load_pairs(name) for name in data.SPLITS}
    assert sum(len(s) for s in splits.values()) >= 100_000
    assert len(splits["test"]) >= 5000 and len(splits["validation"]) >= 1000
    sources = {name: {s for s, _ in pairs} for name, pairs in splits.items()}
    for name, pairs in splits.items():
        assert len(sources[name]) == len(pairs), f"duplicate sources in {name}"
    names = list(sources)
    for i, first in enumerate(names):
        for second in names[i + 1 :]:
            assert not sources[first] & sources[second], (first, second)


def _symbol_blind(source: str) -> tuple:
    """A cheap necessary condition for two sources to share a structure: equal tokens up to symbol names."""
    return tuple(sorted("s" if t in SYMBOLS else t for t in tokenize(source)))


def test_structures_split_shares_no_structure_with_training():
    seen = {}
    for source, _ in load_pairs("train") + load_pairs("validation"):
        seen.setdefault(_symbol_blind(source), []).append(source)
    for source, _ in random.Random(1).sample(load_pairs("structures"), 150):
        shape = data.structure(source)
        for other in seen.get(_symbol_blind(source), []):
            assert data.structure(other) != shape, (source, other)


def test_structure_ignores_symbol_names_and_term_order():
    assert data.structure("tan(h*x)+sinh(g*x)") == data.structure("tan(a*x)+sinh(b*x)")
    assert data.structure("sin(b*x)+cos(a*x)") == data.structure("sin(a*x)+cos(b*x)")
    assert data.structure("sin(a*x)+cos(a*x)") != data.structure("sin(a*x)+cos(b*x)")


def test_parse_expression_reads_implicit_multiplication():
    assert data.normalize("tan(hx)+sinh(gx)") == "tan(h*x)+sinh(g*x)"
    assert data.normalize("cosh(ax)^3".replace("^", "**")) == "cosh(a*x)**3"
    assert data.normalize("exp(12x)") == "exp(12*x)"


@pytest.mark.parametrize("text", ["sin(a*x)+", "**x", "sin()", "x y z ("])
def test_parse_expression_rejects_non_expressions(text):
    with pytest.raises(ValueError):
        data.parse_expression(text)


def test_draws_are_reproducible_and_cover_the_family():
    draws = [data.candidate(7, i) for i in range(2000)]
    assert draws == [data.candidate(7, i) for i in range(2000)]
    operators = {d.operator for d in draws}
    assert operators == {None, "+", "-", "*", "/"}
    functions = {t.function for d in draws for t in d.terms}
    assert functions == set(data.FUNCTION_NAMES)
    powered = sum(t.power > 1 for d in draws for t in d.terms) / sum(len(d.terms) for d in draws)
    assert 0.2 < powered < 0.3


def test_simplify_forms_appear():
    sources = {source for source, _ in load_pairs("test")}
    assert any("exp(x*(" in s for s in sources)  # two exponentials merged
    assert any(s.startswith("exp(-") or "*exp(-" in s for s in sources)  # a quotient by exp
    assert any(s.startswith("1/") for s in sources)
    assert any("/" in s for s in sources)


def test_pairs_file_round_trip_and_errors(tmp_path):
    path = tmp_path / "pairs.tsv.gz"
    pairs = [("sin(a*x)", "a*x-a**3*x**3/6+a**5*x**5/120+O(x**6)")]
    data.write_pairs(path, pairs)
    assert data.read_pairs(path) == pairs
    bad = tmp_path / "bad.tsv"
    bad.write_text("sin(a*x)\tok\nno tab here\n")
    with pytest.raises(ValueError, match=r"bad.tsv, line 2"):
        data.read_pairs(bad)


def test_split_pairs_is_deterministic_and_disjoint():
    pairs = [(f"sin({s}*x)+cos({t}*x)", "t") for s in "abcdfghm" for t in "abcdfghm" if s != t]
    pairs += [(f"exp({s}*x)*tan({t}*x)**2", "t") for s in "abcdfghm" for t in "abcdfghm"]
    splits = data.split_pairs(pairs, seed=3, n_test=20, n_validation=10, structure_share=0.5)
    assert splits == data.split_pairs(
        list(reversed(pairs)), seed=3, n_test=20, n_validation=10, structure_share=0.5
    )
    assert sum(len(s) for s in splits.values()) == len(pairs)
    held = {data.structure(s) for s, _ in splits["structures"]}
    assert not held & {data.structure(s) for s, _ in splits["train"] + splits["validation"]}


def test_growing_a_data_set_keeps_every_old_pair_in_its_split():
    old_pairs = [(f"sin({s}*x)+cos({t}*x)", "t") for s in "abcdfghm" for t in "abcdfghm" if s != t]
    previous = data.split_pairs(old_pairs, seed=3, n_test=10, n_validation=5, structure_share=0.3)
    new_pairs = [(f"exp({k}*x)*tan({s}*x)", "t") for k in range(1, 6) for s in "abcdfghm"]
    grown = data.split_pairs(old_pairs[:7] + new_pairs, seed=3, n_test=6, n_validation=4,
                             structure_share=0.3, previous=previous)  # fmt: skip
    split_of = {source: name for name, pairs in grown.items() for source, _ in pairs}
    assert len(split_of) == len(old_pairs) + len(new_pairs)  # no pair lost, none twice
    for name, pairs in previous.items():
        assert all(split_of[source] == name for source, _ in pairs), name
    new_sources = {source for source, _ in new_pairs}
    assert sum(split_of[s] == "test" for s in new_sources) == 6
    assert sum(split_of[s] == "validation" for s in new_sources) == 4
    held = {data.structure(s) for s, _ in grown["structures"]}
    assert not held & {data.structure(s) for s, _ in grown["train"]}
    assert grown == data.split_pairs(list(reversed(new_pairs)), seed=3, n_test=6, n_validation=4,
                                     structure_share=0.3, previous=previous)  # fmt: skip


def test_the_family_has_whole_number_arguments_and_shared_symbols():
    draws = [data.candidate(11, i) for i in range(4000)]
    numbers = [t for d in draws for t in d.terms if t.slot is None]
    assert {t.multiplier for t in numbers} == set(data.NUMBERS)
    assert 0.3 < len(numbers) / sum(len(d.terms) for d in draws) < 0.5
    pairs = [d for d in draws if len(d.terms) == 2]
    shared = [d for d in pairs if d.terms[0].slot == d.terms[1].slot == 0]
    assert len(shared) / len(draws) > 0.11  # both terms on one symbol: the hardest coefficients to combine
    sin_x = data.Draw((data.Term("sin", 1, 1, slot=None),), None, ())
    assert data.pair_of(sin_x) == ("sin(x)", "x-x**3/6+x**5/120+O(x**6)")  # k = 1 printed as plain x
    mixed = data.Draw((data.Term("exp", 2, 1, slot=None), data.Term("cos", 3, 2, slot=0)), "*", ("h",))
    assert data.pair_of(mixed)[0] == "exp(2*x)*cos(3*h*x)**2"


@pytest.mark.parametrize(
    "text, read",
    [("atan(a*x)", "atan"), ("asinh(x)", "asinh"), ("acos(a*x)", "acos"), ("sina*x", "sina"),
     ("sin(x)+tana", "tana"), ("log(1+a*x)", "log"), ("cot(a*x)", "cot"), ("sqrt(x)", "sqrt")],
)  # fmt: skip
def test_the_reader_refuses_names_it_does_not_know_and_never_rewrites_them(text, read):
    with pytest.raises(data.TokenizationError) as error:
        data.parse_expression(text)
    message = str(error.value)
    assert f"{read!r} at position {text.index(read)}" in message
    assert "sin, cos, tan, sinh, cosh, tanh, exp" in message and "\n" not in message


def test_a_function_name_needs_its_parenthesis():
    with pytest.raises(data.TokenizationError, match=r"function 'sin' at position 0 .* needs its argument"):
        data.parse_expression("sin a x")
    assert data.normalize("tan(hx)") == "tan(h*x)"  # the lecture's own shorthand stays legal
    assert data.normalize("tanh (a x)") == "tanh(a*x)"


@pytest.mark.parametrize(
    "text, why",
    [
        ("sin(12*a*x)", "the argument 12*a*x of sin"),
        ("x+800*sin(a*x)", "x stands outside the functions"),
        ("x+800*sin(a*x)", "the factor 800"),
        ("x*sin(a*x)", "x stands outside the functions"),
        ("sin(a*x)+1", "the term 1 holds no function of x"),
        ("sin(a*x)+cos(b*x)+tan(b*x)", "3 terms"),
        ("sin(n*x)", "the symbol n"),
        ("sin(a*x)*cos(b*x)*tan(c*x)", "3 symbols"),
        ("sin(a*x)**7", "the power 7"),
        ("3*sin(a*x)", "the factor 3"),
    ],
)
def test_outside_the_family_says_why(text, why):
    reason = data.outside_family(data.parse_expression(text))
    assert reason is not None and why in reason


@pytest.mark.parametrize(
    "text",
    ["sin(x)", "exp(2*x)", "cos(3*x)**2", "exp(x)*sin(x)", "1/sin(x)", "sinh(2*x)-tan(a*x)",
     "tan(h*x)+sinh(g*x)", "cosh(a*x)**3+tanh(b*x)", "exp(-2*a*x)*cos(3*b*x)", "tan(hx)/sinh(5x)**3"],
)  # fmt: skip
def test_the_family_as_a_student_types_it(text):
    assert data.outside_family(data.parse_expression(text)) is None


def test_every_draw_is_inside_the_family_as_drawn_and_as_shipped(monkeypatch):
    draws = [data.candidate(99, i) for i in range(2000)]
    shipped = random.Random(5).sample(load_pairs("train"), 200)
    for source, _ in shipped:
        assert data.outside_family(data.parse_expression(source)) is None, source
    monkeypatch.setattr(data, "_shipped_sources", frozenset)  # the grammar alone
    for d in draws:
        typed = data._build(d.terms, d.operator).xreplace(data._renaming(d))  # as a student would type it
        if typed.has(data.x):  # tan(a*x)/tan(a*x) is 1, and never a pair
            assert data.outside_family(typed) is None, typed


def test_a_draw_as_typed_keeps_the_students_form_and_sympys_series():
    d = data.Draw((data.Term("sin", 1, 1, slot=None), data.Term("cos", 1, 1, slot=None)), "*", ())
    assert data.pair_of(d)[0] == "sin(2*x)/2"  # what sympy.simplify makes of it
    source, target = data.pair_of(d, typed=True)
    assert source == "sin(x)*cos(x)" and target == sympy_target(source) == sympy_target("sin(2*x)/2")
    pairs, _ = data.generate_pairs(30, seed=8, typed=True)
    for source, target in pairs:
        assert target == sympy_target(source), source


def test_the_simplest_inputs_are_every_term_and_every_pair_of_small_terms(monkeypatch):
    sources = data.simplest_sources()
    assert len(sources) == len(set(sources)) > 4000
    for f in data.FUNCTION_NAMES:
        for shown in ("x", "5*x"):
            assert f"{f}({shown})" in sources
            assert f"{f}({shown})**3" in sources or f == "exp"  # sympy reads exp(x)**3 as exp(3*x)
    assert "exp(15*x)" in sources
    assert {"-tan(x)+sinh(2*x)", "exp(x)*sin(x)", "sin(x)/tan(2*x)**3", "sin(x)+cos(2*x)**2"} <= set(sources)
    assert "sin(x)/sin(x)" not in sources and "sin(3*x)+cos(x)" not in sources  # 1; k 3 only alone
    monkeypatch.setattr(data, "_shipped_sources", frozenset)
    assert all(data.outside_family(data.parse_expression(s)) is None for s in sources[::25])
