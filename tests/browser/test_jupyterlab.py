"""The student's-eye view: JupyterLab, in a real browser, opens and runs the notebooks and shows the explorer.

nbval proves the kernel side of each notebook runs; this test looks at what JupyterLab shows. A student
notebook and notebook 06 (the solution) are run with Run → Run All Cells; every cell must run, with no
error (or other stderr) output, and every image must load. In 06: the static heatmaps are images, the
attention explorer renders, typing an expression and pressing Enter updates its series and heatmap,
choosing a head redraws the heatmap, and each view (matrix, lines, model, steps) draws its picture: a token
chosen in the line view, a map of the model view opened in the line view, play stepping through the
decoding. Screenshots of the explorer, one per view, go to ``build/browser-screenshots/``.

``make test-browser`` runs it (see the README); conftest.py holds the machinery.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from conftest import EXACTLY, ROOT, Notebook, log

try:
    from playwright.sync_api import TimeoutError as PlaywrightTimeout
except ImportError:  # the browser fixture fails with what to install
    PlaywrightTimeout = TimeoutError

EXPLORER_NOTEBOOK = "solutions/06_translation.ipynb"
STUDENT_NOTEBOOK = "notebooks/01_tokenization.ipynb"
NEW_EXPRESSION = "sin(a*x)+cos(b*x)"  # in the family the model knows; its series differs from the lecture's
# cells whose output is a static picture of attention: heatmaps, the line view, a step of decoding
HEATMAP_CALLS = ("plot_attention(", "plot_attention_grid(", "plot_attention_lines(", "plot_decoding_step(")


def notebook_path(variable: str, default: str) -> Path:
    """The notebook to run: ``default`` in the repository, or another one named by an environment variable."""
    path = Path(os.environ.get(variable, default))
    path = path if path.is_absolute() else ROOT / path
    if not path.exists():
        pytest.fail(f"{path} does not exist")
    return path


def source_of(cell: dict) -> str:
    return "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]


def first_line(cell: dict) -> str:
    return (source_of(cell).strip().splitlines() or [""])[0][:80]


def assert_ran_cleanly(notebook: Notebook, state: dict, saved: list[dict]) -> None:
    """Every code cell ran, in order; no error output, no stderr, no broken image, in the page or the file."""
    problems: dict[int, list[str]] = {}  # by cell
    code_cells = [(index, cell) for index, cell in enumerate(saved) if cell["cell_type"] == "code"]
    for index, cell in code_cells:
        said = problems.setdefault(index, [])
        if cell.get("execution_count") is None:
            said.append("did not run")
        for output in cell.get("outputs", []):
            if output["output_type"] == "error":
                said.append(f"raised {output['ename']}: {output['evalue']}")
            elif output["output_type"] == "stream" and output["name"] == "stderr":
                text = "".join(output["text"]) if isinstance(output["text"], list) else output["text"]
                said.append(f"wrote to stderr:\n{text.strip()[:600]}")
    for index, cell in enumerate(state["cells"]):
        said = problems.setdefault(index, [])
        if cell["code"] and not cell["prompt"].strip()[1:-2].isdigit():
            said.append(f"shows the prompt {cell['prompt'].strip()!r}")
        if cell["stderr"] and not said:
            said.append(f"shows error output: {cell['stderr'][0][:600]}")
        broken = [image for image in cell["images"] if not image["loaded"]]
        if broken:
            said.append(f"shows {len(broken)} image(s) that did not load")
    report = [
        f"cell {index} ({first_line(saved[index])}): " + "; ".join(said)
        for index, said in sorted(problems.items())
        if said
    ]
    counts = [cell["execution_count"] for _, cell in code_cells if cell.get("execution_count") is not None]
    if counts != sorted(set(counts)):
        report.append(f"cells ran out of order: execution counts {counts}")
    assert not report, f"{notebook.path}:\n" + "\n".join(report)
    assert len(saved) == len(state["cells"]), "the page and the saved notebook differ in their cells"


# ------------------------------------------------------------------------------------- a student notebook


@pytest.fixture
def student(open_notebook):
    notebook = open_notebook(notebook_path("LABUTILS_BROWSER_STUDENT_NOTEBOOK", STUDENT_NOTEBOOK), "student")
    yield notebook
    notebook.close()  # its kernel stops: notebook 06 gets the cores


def test_student_notebook_runs_in_jupyterlab(student, screenshots):
    """A student notebook as a student gets it: exercises unsolved, every cell runs, no error output."""
    state = student.run_all()
    saved = student.save()
    student.page.screenshot(path=str(screenshots / "student-notebook.png"))
    assert_ran_cleanly(student, state, saved)


# ------------------------------------------------------------------------------------------ notebook 06


@pytest.fixture(scope="module")
def translation(open_notebook):
    """Notebook 06 (a copy) open in JupyterLab, run and saved: (notebook, page state, saved cells)."""
    notebook = open_notebook(notebook_path("LABUTILS_BROWSER_NOTEBOOK", EXPLORER_NOTEBOOK), "translation")
    state = notebook.run_all()
    saved = notebook.save()
    yield notebook, state, saved
    notebook.close()


def test_every_cell_of_06_runs_without_error_output(translation):
    assert_ran_cleanly(*translation)


def test_static_heatmaps_are_images(translation, screenshots):
    notebook, state, saved = translation
    heatmaps = [
        index
        for index, cell in enumerate(saved)
        if cell["cell_type"] == "code" and any(call in source_of(cell) for call in HEATMAP_CALLS)
    ]
    assert heatmaps, f"no cell of {notebook.path} draws a heatmap ({', '.join(HEATMAP_CALLS)})"
    for index in heatmaps:
        images = [image for image in state["cells"][index]["images"] if not image["widget"]]
        assert images, f"cell {index} ({first_line(saved[index])}) shows no image"
        assert all(image["loaded"] and image["width"] > 100 for image in images), (index, images)
    first = notebook.page.locator(".jp-Notebook .jp-Cell").nth(heatmaps[0]).locator(".jp-OutputArea")
    first.screenshot(path=str(screenshots / "static-heatmap.png"))


# ------------------------------------------------------------------------------------------ the explorer

# What the explorer shows: busy or not, its status line, the rows of its series table, the heatmap.
EXPLORER_JS = """(root) => {
    const rows = {};
    for (const tr of root.querySelectorAll('.labutils-series-output tr')) {
        const cells = [...tr.querySelectorAll('td')].map((td) => td.innerText.trim());
        if (cells.length >= 2) rows[cells[0]] = cells[1];
    }
    const img = root.querySelector('img.labutils-figure') || root.querySelector('img');
    return {
        busy: root.classList.contains('labutils-busy'),
        status: (root.querySelector('.labutils-status') || {}).innerText || '',
        rows,
        image: img ? {src: img.src, loaded: img.complete && img.naturalWidth > 0,
                      width: img.naturalWidth, height: img.naturalHeight} : null,
    };
}"""

# The heatmap's bytes, hashed: a new PNG, not merely a new blob URL for the same picture.
IMAGE_HASH_JS = """async (root) => {
    const img = root.querySelector('img.labutils-figure') || root.querySelector('img');
    if (!img || !img.src) return null;
    const bytes = await (await fetch(img.src)).arrayBuffer();
    const digest = await crypto.subtle.digest('SHA-256', bytes);
    return [...new Uint8Array(digest)].map((b) => b.toString(16).padStart(2, '0')).join('');
}"""


class Explorer:
    """The explorer widget as the page shows it."""

    def __init__(self, notebook: Notebook):
        self.notebook, self.page, self.deadline = notebook, notebook.page, notebook.deadline
        self.root = self.page.locator(".labutils-explorer")

    def state(self) -> dict:
        return self.root.evaluate(EXPLORER_JS)

    def image_hash(self) -> str | None:
        return self.root.evaluate(IMAGE_HASH_JS)

    def model_series(self, state: dict) -> str | None:
        return next((value for name, value in state["rows"].items() if name.startswith("model")), None)

    def settled(self, state: dict) -> bool:
        """The explorer has finished: not busy, a heatmap shown, and sympy's verdict in."""
        image = state["image"]
        return (
            not state["busy"]
            and bool(image and image["loaded"])
            and "checking" not in state["rows"].get("sympy", "checking")
        )

    def wait(self, doing: str, condition=lambda state: True, cap: float = 120) -> dict:
        """Poll until the explorer has settled and ``condition`` holds, twice in a row (no flicker)."""
        end, streak = time.monotonic() + cap, 0
        while True:
            state = self.state()
            streak = streak + 1 if self.settled(state) and condition(state) else 0
            if streak >= 2:
                return state
            self.deadline.check(doing)
            if time.monotonic() > end:
                pytest.fail(f"{doing}: nothing after {cap:.0f} s; the explorer shows {state}")
            self.page.wait_for_timeout(500)

    def screenshot(self, path: Path) -> None:
        """The whole explorer: the window grows for the shot if the widget is taller than it."""
        viewport = self.page.viewport_size
        needed = int(self.root.bounding_box()["height"]) + 300  # JupyterLab's bars above and below
        if needed > viewport["height"]:
            self.page.set_viewport_size({"width": viewport["width"], "height": needed})
        try:
            self.root.evaluate("(root) => root.scrollIntoView({block: 'center'})")
            self.page.wait_for_timeout(500)
            self.root.screenshot(path=str(path), timeout=self.deadline.ms(60, "taking a screenshot"))
        finally:
            self.page.set_viewport_size(viewport)
        log(f"screenshot: {path}")


@pytest.fixture(scope="module")
def explorer(translation):
    notebook = translation[0]
    root = notebook.page.locator(".labutils-explorer")
    doing = "waiting for the explorer widget to render"
    try:
        root.wait_for(state="visible", timeout=notebook.deadline.ms(120, doing))
    except PlaywrightTimeout:
        notebook.deadline.check(doing)
        texts = notebook.page.locator(".jp-OutputArea-output").all_inner_texts()
        hints = [text[:300] for text in texts if "widget" in text.lower()]  # "Loading widget...", errors
        pytest.fail(
            f"{doing}: no explorer after 120 s; outputs that mention widgets: {hints[:5]}; "
            f"browser console errors: {notebook.console[-5:]}"
        )
    return Explorer(notebook)


def test_explorer_renders(explorer, screenshots):
    assert explorer.root.count() == 1, "notebook 06 should show exactly one explorer"
    for label in ("expression", "attention", "layer", "head"):
        control = explorer.root.get_by_label(label, exact=True)
        assert control.count() == 1 and control.is_visible(), f"the explorer has no visible {label!r} control"
    state = explorer.wait("waiting for the explorer's first series and heatmap")
    assert explorer.model_series(state), f"the explorer shows no series: {state['rows']}"
    assert state["image"]["width"] > 100 and state["image"]["height"] > 100, state["image"]
    explorer.screenshot(screenshots / "explorer-1-before.png")


def test_enter_updates_series_and_heatmap(explorer, screenshots):
    before = explorer.wait("waiting for the explorer before typing")
    before_hash = explorer.image_hash()
    field = explorer.root.get_by_label("expression", exact=True)
    field.click()
    field.press("Control+a")
    field.press_sequentially(NEW_EXPRESSION, delay=20)
    field.press("Enter")
    after = explorer.wait(
        f"waiting for the explorer to show {NEW_EXPRESSION}",
        lambda state: state["rows"].get("expression", "").startswith(NEW_EXPRESSION),
    )
    assert explorer.model_series(after) != explorer.model_series(before), (before["rows"], after["rows"])
    assert explorer.image_hash() != before_hash, "the heatmap did not change with the expression"
    log(f"explorer: {NEW_EXPRESSION} → {explorer.model_series(after)} (sympy: {after['rows'].get('sympy')})")
    explorer.screenshot(screenshots / "explorer-2-after-enter.png")


def test_head_selector_changes_heatmap(explorer, screenshots):
    explorer.wait("waiting for the explorer before choosing a head")
    before_hash = explorer.image_hash()
    head = explorer.root.get_by_label("head", exact=True)
    options = head.locator("option").all_inner_texts()
    current = head.evaluate("(select) => select.options[select.selectedIndex].text")
    choice = next(option for option in options if option != current and option.startswith("head"))
    head.select_option(label=choice)
    end = time.monotonic() + 60
    while explorer.image_hash() == before_hash:
        explorer.deadline.check(f"waiting for the heatmap of {choice}")
        assert time.monotonic() < end, f"choosing {choice!r} (was {current!r}) did not change the heatmap"
        explorer.page.wait_for_timeout(500)
    explorer.wait(f"waiting for the explorer to settle on {choice}")
    explorer.screenshot(screenshots / "explorer-3-head.png")


# ------------------------------------------------------------------------------------------ the views

# The view buttons' labels, the file each view's screenshot goes to, and a control only that view shows.
VIEWS = (
    ("lines", "lines", ".labutils-token select"),
    ("model view", "model", ".labutils-open-buttons button"),
    ("steps", "steps", ".labutils-step"),
    ("matrix", "matrix", None),
)


def choose_view(explorer: Explorer, label: str) -> None:
    explorer.root.locator(".labutils-view button", has_text=EXACTLY(label)).click()


def wait_for_a_new_picture(explorer: Explorer, before: str | None, doing: str, cap: float = 120) -> dict:
    """Until the explorer shows another picture than ``before`` (its hash), and has settled."""
    end = time.monotonic() + cap
    while explorer.image_hash() == before:
        explorer.deadline.check(doing)
        assert time.monotonic() < end, f"{doing}: the picture did not change in {cap:.0f} s"
        explorer.page.wait_for_timeout(500)
    return explorer.wait(doing)


def active_view(explorer: Explorer) -> str:
    return explorer.root.locator(".labutils-view button.mod-active").inner_text().strip()


def test_each_view_renders_and_is_looked_at(explorer, screenshots):
    """Every view of the explorer, chosen as a student chooses it, draws its picture; a screenshot of each."""
    explorer.wait("waiting for the explorer before choosing a view")
    for label, name, own_control in VIEWS:
        before = explorer.image_hash()
        choose_view(explorer, label)
        state = wait_for_a_new_picture(explorer, before, f"waiting for the {label} view")
        assert active_view(explorer) == label
        assert state["image"]["width"] > 300 and state["image"]["height"] > 200, (label, state["image"])
        if own_control is not None:
            assert explorer.root.locator(own_control).first.is_visible(), (
                f"the {label} view lacks {own_control}"
            )
        explorer.screenshot(screenshots / f"explorer-view-{name}.png")


def test_the_line_view_draws_the_lines_of_the_token_chosen(explorer, screenshots):
    choose_view(explorer, "lines")
    explorer.wait("waiting for the line view")
    before = explorer.image_hash()
    token = explorer.root.locator(".labutils-token select")
    options = [text.replace("\xa0", " ") for text in token.locator("option").all_inner_texts()]
    assert options[0] == "all tokens" and len(options) > 5, options  # ipywidgets writes no-break spaces
    token.select_option(index=4)
    wait_for_a_new_picture(explorer, before, f"waiting for the lines of {options[4]}")
    explorer.screenshot(screenshots / "explorer-view-lines-token.png")
    token.select_option(index=0)
    explorer.wait("waiting for every token's lines again")


def test_a_map_of_the_model_view_opens_in_the_line_view(explorer, screenshots):
    choose_view(explorer, "model view")
    explorer.wait("waiting for the model view")
    before = explorer.image_hash()
    explorer.root.locator(".labutils-open-in button", has_text=EXACTLY("open in lines")).click()
    explorer.root.locator(".labutils-open-buttons button", has_text=EXACTLY("L2 H3")).click()
    wait_for_a_new_picture(explorer, before, "waiting for layer 2, head 3 in the line view")
    assert active_view(explorer) == "lines"
    selected = "(select) => select.options[select.selectedIndex].text.replace(/\\u00a0/g, ' ')"
    assert explorer.root.locator(".labutils-layer select").evaluate(selected) == "layer 2"
    assert explorer.root.locator(".labutils-head select").evaluate(selected) == "head 3"
    explorer.screenshot(screenshots / "explorer-view-model-opened.png")


def test_play_steps_through_the_decoding(explorer, screenshots):
    choose_view(explorer, "steps")
    explorer.wait("waiting for the steps view")
    readout = explorer.root.locator(".labutils-step .widget-readout")
    first, before = readout.inner_text().strip(), explorer.image_hash()
    play = explorer.root.locator(".labutils-play button").first  # play, and pause while playing
    play.click()
    end = time.monotonic() + 90
    while int(readout.inner_text().strip()) < int(first) + 2:
        explorer.deadline.check("waiting for the steps to play")
        assert time.monotonic() < end, f"play did not move the step from {first} in 90 s"
        explorer.page.wait_for_timeout(500)
    play.click()  # pause (stop would go back to the first step)
    wait_for_a_new_picture(explorer, before, "waiting for a later step's picture")
    reached = readout.inner_text().strip()
    assert int(reached) >= int(first) + 2, (first, reached)
    log(f"explorer: played from step {first} to {reached}")
    explorer.screenshot(screenshots / "explorer-view-steps-played.png")
    choose_view(explorer, "matrix")
    explorer.wait("waiting for the matrix view again")
