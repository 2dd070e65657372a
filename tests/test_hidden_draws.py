"""Every hidden test draws its inputs for any secret: a grading run's secret never breaks a hidden test."""

import pytest
import torch

from labutils import checks  # noqa: F401  (registers every notebook's exercises and hidden tests)
from labutils.checks.core import HIDDEN_TESTS, Case, hidden_generator

torch.set_num_threads(1)

SECRETS = range(25)
HIDDEN = [(grade_id, test) for grade_id, tests in sorted(HIDDEN_TESTS.items()) for test in tests]


@pytest.mark.parametrize("grade_id, test", HIDDEN, ids=[f"{g}:{t.name}" for g, t in HIDDEN])
def test_a_hidden_test_makes_its_case_for_every_secret(grade_id, test):
    """What a grading run's secret draws is always a case to judge (never an error of the draw itself)."""
    for secret in SECRETS:
        case = test.make(hidden_generator(secret, grade_id, test.name))
        assert isinstance(case, Case), f"secret {secret}"


@pytest.mark.parametrize("secret", [22, 358, 385])
def test_a_draw_the_family_rejects_is_drawn_again(secret):
    """These secrets first draw an expression the family rejects (one that does not depend on x, one whose
    source the vocabulary cannot write): the hidden test of 6.2 draws again instead of failing."""
    import random

    from labutils import data
    from labutils.checks.core import integer
    from labutils.checks.translation import any_pair

    grade_id = "06_translation.series_log_probability"
    first = random.Random(integer(hidden_generator(secret, grade_id, "any_pair"), 0, 2**31))
    with pytest.raises(data.Rejected):
        data.pair_of(data.draw(first))
    from labutils.metrics import OK, check_equivalence

    _, source, series = any_pair(hidden_generator(secret, grade_id, "any_pair")).args
    assert check_equivalence([series], [data.series_text(data.parse_expression(source))]) == [OK]
