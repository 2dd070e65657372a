"""Typical wrong answers to notebook 07's exercises, each with a piece of the hint its feedback must give.

Made from the reference answers of ``solutions/07_gpt.ipynb`` by changing one thing each, and shared by
``test_checks.py`` (every exercise's mistakes, judged with the others) and ``test_checks_gpt.py``.
"""

from __future__ import annotations

_SEQUENCE = (
    "def build_sequence(source, series):\n"
    "    source_codes = SEQUENCE_VOCAB.encode(tokenize(source))\n"
    "    series_codes = SEQUENCE_VOCAB.encode(tokenize(series))\n"
    "    sequence = [SOS_IDX] + source_codes + [SEP_IDX] + series_codes + [EOS_IDX]\n"
    "    loss_mask = [False] * (len(source_codes) + 1) + [True] * (len(series_codes) + 1)\n"
    "    return sequence[:-1], sequence[1:], loss_mask"
)
_RETURN = "    return sequence[:-1], sequence[1:], loss_mask"
_WHOLE = "    sequence = [SOS_IDX] + source_codes + [SEP_IDX] + series_codes + [EOS_IDX]\n"
_MASK = "    loss_mask = [False] * (len(source_codes) + 1) + [True] * (len(series_codes) + 1)\n"


def _sequence(old: str, new: str) -> str:
    assert old in _SEQUENCE, old
    return _SEQUENCE.replace(old, new)


_GENERATE = (
    "def greedy_generate(model, source, max_len=100):\n"
    "    prompt = [SOS_IDX] + SEQUENCE_VOCAB.encode(tokenize(source)) + [SEP_IDX]\n"
    "    cache = model.new_cache()\n"
    "    codes = torch.tensor([prompt])\n"
    "    series = []\n"
    "    for _ in range(max_len):\n"
    "        hidden, _ = model.run(codes, cache=cache)\n"
    "        next_token = int(model.logits(hidden[:, -1]).argmax())\n"
    "        if next_token == EOS_IDX:\n"
    "            break\n"
    "        series.append(next_token)\n"
    "        codes = torch.tensor([[SEQUENCE_VOCAB.stoi[TARGET_VOCAB.itos[next_token]]]])\n"
    "    return TARGET_VOCAB.decode(series)"
)


def _generate(*changes: tuple[str, str]) -> str:
    source = _GENERATE
    for old, new in changes:
        assert old in source, old
        source = source.replace(old, new)
    return source


MISTAKES: dict[str, list[tuple[str, str]]] = {
    "07_gpt.build_sequence": [
        (_sequence(_RETURN, "    return sequence, sequence, loss_mask"), "your input ends with <eos>"),
        (
            _sequence(_RETURN, "    return sequence[:-1], sequence[:-1], loss_mask"),
            "your target is the input",
        ),
        (
            _sequence(_RETURN, "    return sequence[:-1], sequence, loss_mask"),
            "your target is the whole sequence",
        ),
        (
            _sequence(_RETURN, "    return sequence[1:], sequence[:-1], loss_mask"),
            "your input starts after <sos>",
        ),
        (
            _sequence(_WHOLE, "    sequence = [SOS_IDX] + source_codes + series_codes + [EOS_IDX]\n"),
            "your input holds no <sep>",
        ),
        (
            _sequence(_WHOLE, "    sequence = code(source, SEQUENCE_VOCAB) + code(series, SEQUENCE_VOCAB)\n"),
            "your input holds <sos> 2 times and <eos> once",
        ),
        (  # the source coded as notebook 02 codes it, <eos> and all, then <sep>
            _sequence(
                _WHOLE, "    sequence = code(source, SEQUENCE_VOCAB) + [SEP_IDX] + series_codes + [EOS_IDX]\n"
            ),
            "your input holds <sos> once and <eos> once",
        ),
        (
            _sequence(
                _WHOLE,
                "    sequence = code(source, SOURCE_VOCAB)[:-1] + [SEP_IDX] + code(series, TARGET_VOCAB)[1:]\n",
            ),
            "the source and the series were coded in their own vocabularies",
        ),
        (
            _sequence(
                _WHOLE,
                "    sequence = [SOS_IDX] + source_codes + [SEP_IDX] + code(series, TARGET_VOCAB)[1:]\n",
            ),
            "the series was coded in the series vocabulary",
        ),
        (
            _sequence(
                "SEQUENCE_VOCAB.encode(tokenize(series))", "TARGET_VOCAB.encode(tokenize(series))"
            ).replace("SEQUENCE_VOCAB.encode(tokenize(source))", "TARGET_VOCAB.encode(tokenize(source))"),
            "a token was looked up in a vocabulary that does not hold it",
        ),
        (
            _sequence(_WHOLE, "    sequence = source_codes + [SEP_IDX] + series_codes + [EOS_IDX]\n"),
            "your input does not start with <sos>",
        ),
        (  # the series first
            _sequence(
                _WHOLE, "    sequence = [SOS_IDX] + series_codes + [SEP_IDX] + source_codes + [EOS_IDX]\n"
            ),
            "compare your sequence with the steps above",
        ),
        (  # input and target built apart, the target without <eos>
            _sequence(
                _RETURN, "    return sequence[:-1], source_codes + [SEP_IDX] + series_codes, loss_mask"
            ),
            "your target does not end with <eos>",
        ),
        (  # input and target built apart, the target without <sep>
            _sequence(
                _RETURN, "    return sequence[:-1], source_codes + series_codes + [EOS_IDX], loss_mask"
            ),
            "the target is the sequence shifted by one",
        ),
        (
            _sequence(_MASK, "    loss_mask = [True] * (len(sequence) - 1)\n"),
            "your mask counts every position",
        ),
        (
            _sequence(
                _MASK,
                "    loss_mask = [True] * (len(source_codes) + 1) + [False] * (len(series_codes) + 1)\n",
            ),
            "your mask is True exactly where it should be False",
        ),
        (
            _sequence(
                _MASK, "    loss_mask = [False] * len(source_codes) + [True] * (len(series_codes) + 2)\n"
            ),
            "your mask counts the position whose target is <sep>",
        ),
        (
            _sequence(
                _MASK,
                "    loss_mask = [False] * (len(source_codes) + 1) + [True] * len(series_codes) + [False]\n",
            ),
            "your mask leaves out the last position, whose target is <eos>",
        ),
        (  # True where the input is a token of the series
            _sequence(
                _MASK, "    loss_mask = [False] * (len(source_codes) + 2) + [True] * len(series_codes)\n"
            ),
            "your mask leaves out the position that reads <sep>",
        ),
        (  # True where the target's code is one the series holds, or <eos>: the source shares many of them
            _sequence(
                _RETURN,
                "    return sequence[:-1], sequence[1:], [c in series_codes or c == EOS_IDX for c in sequence[1:]]",
            ),
            "whose target belongs to the prompt (a token of the expression, or <sep>): whether a position counts",
        ),
        (  # the same, <eos> forgotten
            _sequence(
                _RETURN, "    return sequence[:-1], sequence[1:], [c in series_codes for c in sequence[1:]]"
            ),
            "it leaves out 1 whose target is a token of the series or <eos>: whether a position counts depends on "
            "where its target is in the sequence, not on which token it is",
        ),
        (
            _sequence(_MASK, "    loss_mask = [False] * len(source_codes) + [True] * len(series_codes)\n"),
            "the mask has one entry, True or False, for each position of the input",
        ),
        (_sequence(_RETURN, "    return sequence[:-1], sequence[1:]"), "return three things, in this order"),
        (  # the tokens themselves, not their codes
            _sequence(
                _WHOLE,
                "    sequence = ['<sos>'] + tokenize(source) + ['<sep>'] + tokenize(series) + ['<eos>']\n",
            ),
            "the codes are whole numbers, each token's place in the sequence vocabulary",
        ),
        (  # a batch of one, as the model reads it
            _sequence(
                _RETURN, "    return torch.tensor([sequence[:-1]]), torch.tensor([sequence[1:]]), loss_mask"
            ),
            "return one flat list of codes, not a batch of them",
        ),
        (_sequence(_RETURN, "    sequence[:-1], sequence[1:], loss_mask"), "return the result"),
    ],
    "07_gpt.greedy_generate": [
        (
            _generate(
                (
                    "SEQUENCE_VOCAB.encode(tokenize(source)) + [SEP_IDX]",
                    "SEQUENCE_VOCAB.encode(tokenize(source))",
                )
            ),
            "the prompt ends with <sep>",
        ),
        (  # the source coded as notebook 02 codes it, <eos> and all, then <sep>
            _generate(
                ("[SOS_IDX] + SEQUENCE_VOCAB.encode(tokenize(source))", "code(source, SEQUENCE_VOCAB)")
            ),
            "the prompt holds no <eos>",
        ),
        (
            _generate(("SEQUENCE_VOCAB.stoi[TARGET_VOCAB.itos[next_token]]", "next_token")),
            "the token fed back was coded in the series vocabulary",
        ),
        (
            _generate(("model.run(codes, cache=cache)", "model.run(codes)")),
            "without the cache, the model keeps nothing between calls",
        ),
        (  # the whole sequence fed at every step, to a cache that holds it already
            _generate(
                ("    series = []\n", "    series, sequence = [], list(prompt)\n"),
                (
                    "        codes = torch.tensor([[SEQUENCE_VOCAB.stoi[TARGET_VOCAB.itos[next_token]]]])",
                    "        sequence.append(SEQUENCE_VOCAB.stoi[TARGET_VOCAB.itos[next_token]])\n"
                    "        codes = torch.tensor([sequence])",
                ),
            ),
            "the cache already holds the keys and values of every position fed before",
        ),
        (  # the same, on a model that writes as many tokens as it may
            _generate(
                ("    series = []\n", "    series, sequence = [], list(prompt)\n"),
                (
                    "        codes = torch.tensor([[SEQUENCE_VOCAB.stoi[TARGET_VOCAB.itos[next_token]]]])",
                    "        sequence.append(SEQUENCE_VOCAB.stoi[TARGET_VOCAB.itos[next_token]])\n"
                    "        codes = torch.tensor([sequence])",
                ),
            ),
            "more positions reached the model than the prompt and max_len = 12 new tokens make",
        ),
        (  # right, but the whole sequence is read again at every step: the cache is not used
            _generate(
                ("    series = []\n", "    series, sequence = [], list(prompt)\n"),
                ("model.run(codes, cache=cache)", "model.run(codes)"),
                (
                    "        codes = torch.tensor([[SEQUENCE_VOCAB.stoi[TARGET_VOCAB.itos[next_token]]]])",
                    "        sequence.append(SEQUENCE_VOCAB.stoi[TARGET_VOCAB.itos[next_token]])\n"
                    "        codes = torch.tensor([sequence])",
                ),
            ),
            "each step after the prompt feeds only the token just written",
        ),
        (_generate(("hidden[:, -1]", "hidden[:, 0]")), "the first token was read from the first position"),
        (_generate(("range(max_len)", "range(max_len + 1)")), "one token too many: stop after max_len = 12"),
        (
            _generate(("range(max_len)", "range(max_len - 1)")),
            "one token too few: generate up to max_len = 12",
        ),
        (
            _generate(
                ("    series = []\n", "    series, sequence = [], list(prompt)\n"),
                (
                    "        codes = torch.tensor([[SEQUENCE_VOCAB.stoi[TARGET_VOCAB.itos[next_token]]]])",
                    "        sequence.append(SEQUENCE_VOCAB.stoi[TARGET_VOCAB.itos[next_token]])\n"
                    "        codes = torch.tensor([sequence[-1:]])",
                ),
                ("    return TARGET_VOCAB.decode(series)", "    return SEQUENCE_VOCAB.decode(sequence)"),
            ),
            "return the series alone",
        ),
        (  # the text spelled from the vocabulary's tokens, <eos> appended before the loop stops
            _generate(
                (
                    "        if next_token == EOS_IDX:\n            break\n        series.append(next_token)\n",
                    "        series.append(next_token)\n        if next_token == EOS_IDX:\n            break\n",
                ),
                (
                    "    return TARGET_VOCAB.decode(series)",
                    "    return ''.join(TARGET_VOCAB.itos[t] for t in series)",
                ),
            ),
            "leave <eos> out of the text",
        ),
        (  # every step taken, the series cut at <eos> afterwards
            _generate(("        if next_token == EOS_IDX:\n            break\n", "")),
            "generation stops as soon as the model writes it",
        ),
        (
            _generate(
                ("    return TARGET_VOCAB.decode(series)", "    return TARGET_VOCAB.tokens_of(series)")
            ),
            "return the series as text",
        ),
        (_generate(("torch.tensor([prompt])", "torch.tensor(prompt)")), "the model reads a batch"),
        (  # the pair that a run returns, left packed
            _generate(
                ("hidden, _ = model.run(codes, cache=cache)", "hidden = model.run(codes, cache=cache)")
            ),
            "a run of the model returns a pair, the hidden states and the attention weights: unpack it",
        ),
        (
            _generate(("model.logits(hidden[:, -1]).argmax()", "model.logits(hidden).argmax()")),
            "a code outside the target vocabulary reached the model",
        ),
        (_generate(("for _ in range(max_len):", "while True:")), "the loop went on past max_len"),
        (
            "def greedy_generate(model, source, max_len=100):\n    return ''",
            "never ran the model",
        ),
        (  # sampling, not the most likely token
            _generate(
                (
                    "int(model.logits(hidden[:, -1]).argmax())",
                    "int(torch.multinomial(model.logits(hidden[:, -1]).softmax(-1)[0], 1))",
                ),
            ),
            "compare your loop with the steps above the exercise",
        ),
    ],
}

#: Answers that only call the package's version: they earn nothing, and are told why.
CHEATS = {
    "07_gpt.build_sequence": (
        "def build_sequence(source, series):\n    return labutils.gpt.sequence_for(source, series)"
    ),
    "07_gpt.greedy_generate": (
        "def greedy_generate(model, source, max_len=100):\n"
        "    return labutils.translate(model, [source], max_len=max_len)[0]"
    ),
}
