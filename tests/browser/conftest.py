"""The browser test's machinery: a private JupyterLab, headless Chromium driven by Playwright, a time limit.

Only ``make test-browser`` (``pytest tests/browser``) runs this folder: ``pytest tests`` (``make test``)
skips it, see ``pytest_ignore_collect``. It needs the ``browser`` extra (Playwright) and Debian's Chromium.

* JupyterLab runs from this Python environment on a free port of 127.0.0.1, with a random token, in a
  temporary root folder that holds *copies* of the notebooks (stripped of their outputs), and with its
  configuration, data, runtime, settings, workspaces and IPython folders there too: the test never touches
  the repository's notebooks (JupyterLab saves what it opens) nor the user's settings.
* Chromium (``/usr/bin/chromium``, or ``$LABUTILS_BROWSER_CHROMIUM``) runs headless, without sandbox (CI
  runs as root), and without reaching for the network.
* Every wait is bounded by one deadline (10 minutes, ``$LABUTILS_BROWSER_TIME_LIMIT`` seconds), and a
  watchdog thread stops JupyterLab and Chromium if the test is still running shortly after it. JupyterLab,
  its kernels and the browser are stopped at the end, whether the test passed or failed.
"""

from __future__ import annotations

import _thread
import contextlib
import json
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
SCREENSHOTS = ROOT / os.environ.get(
    "LABUTILS_BROWSER_SCREENSHOTS", "build/browser-screenshots"
)  # or absolute
CHROMIUM = os.environ.get("LABUTILS_BROWSER_CHROMIUM", "/usr/bin/chromium")
TIME_LIMIT = float(os.environ.get("LABUTILS_BROWSER_TIME_LIMIT", 600))
CHROMIUM_ARGS = [
    "--no-sandbox",  # CI runs as root, where Chromium's sandbox cannot start
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--no-default-browser-check",
    "--no-proxy-server",  # the browser only ever talks to JupyterLab on 127.0.0.1
    "--disable-dev-shm-usage",  # containers often have a small /dev/shm
]
# JupyterLab's settings for the test: no news or update checks, no toasts over the screenshots, every cell
# in the DOM (the default windowing leaves cells out of view unrendered), the notebook's kernel started
# without a "Select Kernel" dialog, no autosave behind the test's back.
LAB_SETTINGS = {
    "@jupyterlab/apputils-extension/notification": {
        "fetchNews": "false",
        "checkForUpdates": False,
        "doNotDisturbMode": True,
    },
    "@jupyterlab/notebook-extension/tracker": {"windowingMode": "none", "autoStartDefaultKernel": True},
    "@jupyterlab/docmanager-extension/plugin": {"autosave": False},
}


def pytest_ignore_collect(collection_path, config):
    """Collect this folder only when it is named: ``pytest tests/browser`` runs it, ``pytest tests`` not."""
    named = any(
        path == HERE or HERE in path.parents
        for path in (Path(arg.split("::")[0]).resolve() for arg in config.args)
    )
    if not named and collection_path.resolve() != HERE and HERE in collection_path.resolve().parents:
        return True
    return None


def EXACTLY(text: str) -> re.Pattern:  # noqa: N802 - reads as a matcher
    """A Playwright ``has_text`` matcher for exactly this text (``has_text="Run"`` also finds "Run All")."""
    return re.compile(rf"^\s*{re.escape(text)}\s*$")


def log(message: str) -> None:
    print(f"[browser test] {message}", flush=True)


# ------------------------------------------------------------------------------------------ the time limit


class GaveUp(Exception):
    """The browser test ran out of time."""


class Deadline:
    """One time limit for the whole browser test; every wait takes its timeout from here."""

    def __init__(self, seconds: float):
        self.seconds = seconds
        self.start = time.monotonic()
        self.end = self.start + seconds

    def left(self) -> float:
        return self.end - time.monotonic()

    def elapsed(self) -> float:
        return time.monotonic() - self.start

    def check(self, doing: str) -> None:
        if self.left() <= 0:
            raise GaveUp(self.message(doing))

    def message(self, doing: str) -> str:
        return (
            f"gave up after {self.seconds:.0f} s (the browser test's time limit) while {doing}; "
            "JupyterLab and the browser are stopped"
        )

    def ms(self, cap: float, doing: str) -> float:
        """A Playwright timeout in milliseconds: ``cap`` seconds, or less if the deadline is nearer."""
        self.check(doing)
        return max(1.0, min(cap, self.left()) * 1000)


class Watchdog:
    """The backstop: shortly after the deadline, stop JupyterLab and Chromium and interrupt the test.

    Every wait in the test is bounded by the deadline already; this catches a call that hangs regardless
    (a browser that stops answering). The processes are ours: JupyterLab's process group and kernels, and
    the descendants of this Python process (Playwright's driver and its Chromium).
    """

    def __init__(self, deadline: Deadline, grace: float = 45.0):
        self.deadline, self.grace = deadline, grace
        self.stoppers: list = []  # callables that stop what the test started
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, name="browser-test-watchdog", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._done.set()

    def _run(self) -> None:
        if self._done.wait(max(0.0, self.deadline.left()) + self.grace):
            return
        sys.stderr.write(
            f"\n[browser test] still running {self.grace:.0f} s after its {self.deadline.seconds:.0f} s "
            "time limit: stopping JupyterLab and the browser\n"
        )
        for stopper in self.stoppers:
            with contextlib.suppress(Exception):
                stopper()
        _kill_descendants(os.getpid())
        _thread.interrupt_main()  # KeyboardInterrupt in the test: pytest reports and runs the teardowns
        if not self._done.wait(30.0):
            sys.stderr.write("[browser test] the test did not stop: exiting\n")
            os._exit(3)


def _descendants(pid: int) -> list:
    import psutil  # ships with ipykernel, hence with JupyterLab

    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.Error:
        return []


def _kill_descendants(pid: int) -> None:
    import psutil

    for process in _descendants(pid):
        with contextlib.suppress(psutil.Error):
            process.kill()


@pytest.fixture(scope="session")
def deadline(request):
    deadline = Deadline(TIME_LIMIT)
    request.session.browser_deadline = deadline
    watchdog = Watchdog(deadline)
    deadline.watchdog = watchdog
    yield deadline
    watchdog.stop()  # JupyterLab and the browser are stopped by now: their fixtures depend on this one
    if deadline.left() <= 0:
        log(f"GAVE UP: the browser test ran past its {deadline.seconds:.0f} s time limit; all stopped")
    else:
        log(f"browser test done in {deadline.elapsed():.0f} s")


# ------------------------------------------------------------------------------------------ JupyterLab


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _strip_outputs(source: Path, target: Path) -> None:
    """Copy a notebook without outputs, execution counts or saved widget state: what shows, this run made."""
    notebook = json.loads(source.read_text(encoding="utf-8"))
    for cell in notebook["cells"]:
        if cell["cell_type"] == "code":
            cell["outputs"], cell["execution_count"] = [], None
    notebook.get("metadata", {}).pop("widgets", None)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(notebook, indent=1, ensure_ascii=False), encoding="utf-8")


class JupyterLab:
    """A JupyterLab server of this environment on 127.0.0.1, private to the test."""

    def __init__(self, home: Path, deadline: Deadline):
        self.home, self.deadline = home, deadline
        self.root = home / "root"  # the notebooks' copies
        self.root.mkdir()
        self.token = secrets.token_hex(24)
        self.log_path = home / "jupyterlab.log"
        self.process: subprocess.Popen | None = None
        self.port = 0
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never a proxy

    def add_notebook(self, path: Path) -> str:
        """Copy a notebook (without its outputs) into the server's root; its path there."""
        path = path.resolve()
        relative = path.relative_to(ROOT) if ROOT in path.parents else Path(path.name)
        _strip_outputs(path, self.root / relative)
        return relative.as_posix()

    def environment(self) -> dict:
        env = dict(os.environ)
        for name in ("JUPYTER_PATH", "JUPYTER_CONFIG_PATH", "MPLBACKEND", "JUPYTER_TOKEN", "JUPYTER_PORT"):
            env.pop(name, None)  # the kernel must draw inline, as for a student
        folders = {
            "JUPYTER_CONFIG_DIR": "config",
            "JUPYTER_DATA_DIR": "data",
            "JUPYTER_RUNTIME_DIR": "runtime",
            "IPYTHONDIR": "ipython",
            "JUPYTERLAB_SETTINGS_DIR": "settings",
            "JUPYTERLAB_WORKSPACES_DIR": "workspaces",
        }
        for name, folder in folders.items():
            (self.home / folder).mkdir(exist_ok=True)
            env[name] = str(self.home / folder)
        for plugin, values in LAB_SETTINGS.items():
            settings = self.home / "settings" / f"{plugin}.jupyterlab-settings"
            settings.parent.mkdir(parents=True, exist_ok=True)
            settings.write_text(json.dumps(values), encoding="utf-8")
        env["PYTHONUNBUFFERED"] = "1"
        return env

    def start(self, tries: int = 3) -> None:
        env = self.environment()
        for attempt in range(1, tries + 1):
            self.port = _free_port()
            command = [
                sys.executable, "-m", "jupyterlab",
                "--no-browser",
                "--ServerApp.ip=127.0.0.1",
                f"--ServerApp.port={self.port}",
                "--ServerApp.port_retries=0",  # the port asked for, or fail (and try another)
                f"--IdentityProvider.token={self.token}",
                f"--ServerApp.root_dir={self.root}",
                "--ServerApp.allow_root=True",
                "--LabApp.news_url=None",
                "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
            ]  # fmt: skip
            with open(self.log_path, "ab") as log_file:
                self.process = subprocess.Popen(
                    command,
                    cwd=self.root,
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=log_file,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,  # its own process group: stopped as one
                )
            if self._wait_ready():
                log(f"JupyterLab {self.version()} on port {self.port} (root {self.root})")
                return
            self.stop()
            log(f"JupyterLab did not start on port {self.port} (try {attempt} of {tries})")
        pytest.fail(f"JupyterLab did not start; its log:\n{self.log_tail()}")

    def _wait_ready(self, timeout: float = 120.0) -> bool:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            self.deadline.check("waiting for JupyterLab to start")
            if self.process.poll() is not None:
                return False
            with contextlib.suppress(OSError, ValueError):
                self.api("GET", "/api/status", timeout=5)
                return True
            time.sleep(0.5)
        return False

    def version(self) -> str:
        import jupyterlab

        return jupyterlab.__version__

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}?token={self.token}"

    def api(self, method: str, path: str, timeout: float = 30):
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.port}{path}",
            method=method,
            headers={"Authorization": f"token {self.token}"},
            data=b"" if method in ("POST", "PUT") else None,
        )
        with self._opener.open(request, timeout=timeout) as response:
            body = response.read()
        return json.loads(body) if body else None

    def sessions(self) -> list[dict]:
        return self.api("GET", "/api/sessions")

    def shut_down_kernel(self, notebook_path: str) -> None:
        """Stop the kernel of one notebook (the next notebook gets the machine's cores to itself)."""
        for session in self.sessions():
            if session.get("path") == notebook_path:
                with contextlib.suppress(OSError, ValueError):
                    self.api("DELETE", f"/api/sessions/{session['id']}")

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def stop(self) -> None:
        """Stop the server, its kernels, and whatever those started; politely first, then by force."""
        process, self.process = self.process, None
        if process is None:
            return
        leftovers = _descendants(process.pid)  # kernels run in their own sessions: remember them now
        if process.poll() is None:
            with contextlib.suppress(OSError, ValueError):
                self.api("POST", "/api/shutdown", timeout=10)
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGTERM)
                try:
                    process.wait(10)
                except subprocess.TimeoutExpired:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(process.pid, signal.SIGKILL)
                    process.wait(10)
        import psutil

        gone, alive = psutil.wait_procs(leftovers, timeout=10)
        for survivor in alive:
            with contextlib.suppress(psutil.Error):
                survivor.kill()


@pytest.fixture(scope="session")
def lab(tmp_path_factory, deadline):
    server = JupyterLab(tmp_path_factory.mktemp("jupyterlab"), deadline)
    deadline.watchdog.stoppers.append(server.stop)
    try:
        server.start()
        yield server
    finally:
        server.stop()


# ------------------------------------------------------------------------------------------ the browser


@pytest.fixture(scope="session")
def browser(deadline):
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("Playwright is missing: pip install -e '.[browser]' (make test-browser does)")
    if not Path(CHROMIUM).exists():
        pytest.fail(
            f"no Chromium at {CHROMIUM}: install Debian's (apt-get install -y chromium), or set "
            "LABUTILS_BROWSER_CHROMIUM to another Chromium or Chrome"
        )
    playwright = sync_playwright().start()
    try:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True, timeout=120_000
        )
        try:
            log(f"Chromium {browser.version} ({CHROMIUM}), headless")
            yield browser
        finally:
            with contextlib.suppress(Exception):
                browser.close()
    finally:
        with contextlib.suppress(Exception):
            playwright.stop()


@pytest.fixture(scope="session")
def screenshots():
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    for old in SCREENSHOTS.glob("*.png"):
        old.unlink()
    log(f"screenshots: {SCREENSHOTS}")
    return SCREENSHOTS


# Pages still open, for a screenshot of what went wrong: {name: page}; and those already shown failing.
OPEN_PAGES: dict = {}
_SHOWN_FAILING: set = set()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    deadline = getattr(item.session, "browser_deadline", None)
    if report.failed and deadline is not None and deadline.left() <= 0:
        # A Playwright timeout cut short by the deadline says only "Timeout … exceeded": say why.
        report.sections.append(("time limit", deadline.message(f"running {item.name}")))
    if report.failed:
        for name, page in list(OPEN_PAGES.items()):
            if report.when != "call" and name in _SHOWN_FAILING:
                continue  # the same broken fixture again
            _SHOWN_FAILING.add(name)
            path = SCREENSHOTS / f"failure-{item.name}-{name}.png"
            with contextlib.suppress(Exception):
                SCREENSHOTS.mkdir(parents=True, exist_ok=True)
                page.screenshot(path=str(path), full_page=False, timeout=10_000)
                log(f"what the browser showed when {item.name} failed: {path}")


# ------------------------------------------------------------------------------------------ a notebook


class Notebook:
    """One notebook open in JupyterLab, in a page of its own: run it, wait for it, read what it shows."""

    # The notebook's state as the page shows it: each code cell's prompt and outputs, and the kernel.
    STATE_JS = """() => {
        const panel = document.querySelector('.jp-NotebookPanel');
        if (!panel) return null;
        const indicator = panel.querySelector('.jp-Notebook-ExecutionIndicator');
        const cells = [...panel.querySelectorAll('.jp-Notebook .jp-Cell')].map((cell) => ({
            code: cell.classList.contains('jp-CodeCell'),
            prompt: (cell.querySelector('.jp-InputPrompt') || {}).textContent || '',
            stderr: [...cell.querySelectorAll(
                '.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]'
            )].map((output) => output.textContent.slice(0, 2000)),
            images: [...cell.querySelectorAll('.jp-OutputArea-output img')].map(
                (img) => ({loaded: img.complete && img.naturalWidth > 0, width: img.naturalWidth,
                           height: img.naturalHeight, widget: !!img.closest('.jupyter-widgets')})),
        }));
        return {kernel: indicator ? indicator.dataset.status : null, cells};
    }"""

    def __init__(self, lab: JupyterLab, browser, deadline: Deadline, source: Path, workspace: str):
        self.lab, self.deadline, self.source = lab, deadline, source
        self.path = lab.add_notebook(source)  # in the server's root
        self.file = lab.root / self.path
        self.cells = json.loads(self.file.read_text(encoding="utf-8"))["cells"]
        self.context = browser.new_context(viewport={"width": 1400, "height": 1000})
        self.context.set_default_timeout(60_000)
        self.page = self.context.new_page()
        self.workspace = workspace
        self.console: list[str] = []
        self.page.on("console", lambda m: m.type == "error" and self.console.append(m.text))
        self.page.on("pageerror", lambda error: self.console.append(f"page error: {error}"))

    def open(self) -> None:
        doing = f"opening {self.path} in JupyterLab"
        self.page.goto(
            self.lab.url(f"/lab/workspaces/{self.workspace}/tree/{self.path}"),
            timeout=self.deadline.ms(120, doing),
        )
        self.page.locator(".jp-NotebookPanel .jp-Notebook .jp-Cell").first.wait_for(
            timeout=self.deadline.ms(120, doing)
        )
        # The page says "idle" before its kernel exists: ask the server too (kernel idle, the page connected).
        self.wait_for(
            lambda s: s and s["kernel"] == "idle" and self.kernel_ready(),
            180,
            f"waiting for the kernel of {self.path} to start",
        )
        self.page.wait_for_timeout(1000)
        dialogs = self.page.locator(".jp-Dialog")
        if dialogs.count():
            pytest.fail(f"JupyterLab shows a dialog over {self.path}: {dialogs.first.inner_text()!r}")

    def state(self) -> dict | None:
        return self.page.evaluate(self.STATE_JS)

    def kernel_ready(self) -> bool:
        for session in self.lab.sessions():
            kernel = session.get("kernel") or {}
            if session.get("path") == self.path:
                return kernel.get("execution_state") == "idle" and kernel.get("connections", 0) > 0
        return False

    def wait_for(self, condition, cap: float, doing: str, every: float = 1.0):
        """Poll the notebook's state until ``condition(state)``; fail after ``cap`` s or at the deadline."""
        end = time.monotonic() + cap
        while True:
            state = self.state()
            if condition(state):
                return state
            self.deadline.check(doing)
            if time.monotonic() > end:
                pytest.fail(f"{doing}: nothing after {cap:.0f} s; the notebook shows {_summary(state)}")
            self.page.wait_for_timeout(every * 1000)

    def run_all(self, cap: float = 540) -> dict:
        """Run → Run All Cells, as a student does; the state once the kernel has finished (or stopped)."""
        start = time.monotonic()
        for attempt in (1, 2):
            self.choose_menu("Run", "Run All Cells")
            if attempt == 2 or self.wait_until(_started, 30):
                break
            log(f"{self.path}: Run All Cells started nothing in 30 s; choosing it again")
        self.wait_for(_started, 60, f"waiting for {self.path} to start running")
        state = self.wait_for(_finished, cap, f"running the cells of {self.path}", every=2.0)
        log(f"{self.path}: ran in {time.monotonic() - start:.0f} s ({_summary(state)})")
        return state

    def choose_menu(self, menu: str, item: str) -> None:
        """Click ``menu`` in the menu bar, then ``item`` in it, once it is enabled."""
        bar = self.page.locator(
            ".lm-MenuBar-item", has=self.page.locator(".lm-MenuBar-itemLabel", has_text=EXACTLY(menu))
        )
        bar.click(timeout=self.deadline.ms(30, f"opening the {menu} menu"))
        entry = self.page.locator(
            ".lm-Menu-item:not(.lm-mod-disabled)",
            has=self.page.locator(".lm-Menu-itemLabel", has_text=EXACTLY(item)),
        )
        entry.click(timeout=self.deadline.ms(30, f"choosing {menu} → {item}"))

    def wait_until(self, condition, seconds: float) -> bool:
        """Whether ``condition(state)`` comes true within ``seconds`` (no failure if it does not)."""
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            if condition(self.state()):
                return True
            self.deadline.check(f"waiting for {self.path}")
            self.page.wait_for_timeout(1000)
        return False

    def save(self) -> list[dict]:
        """Save (Ctrl+S) and read back the notebook's cells as JupyterLab wrote them."""
        before = self.file.stat().st_mtime_ns
        self.page.locator(".jp-NotebookPanel .jp-Notebook").first.click(position={"x": 5, "y": 5})
        self.page.keyboard.press("Control+s")
        end = time.monotonic() + 60
        while self.file.stat().st_mtime_ns == before:
            self.deadline.check(f"saving {self.path}")
            if time.monotonic() > end:
                pytest.fail(f"JupyterLab did not save {self.path} within 60 s")
            time.sleep(0.5)
        for _ in range(20):  # the file may be caught half written
            with contextlib.suppress(ValueError):
                return json.loads(self.file.read_text(encoding="utf-8"))["cells"]
            time.sleep(0.5)
        pytest.fail(f"JupyterLab saved {self.path} as something that is not JSON")

    def close(self) -> None:
        OPEN_PAGES.pop(self.workspace, None)
        with contextlib.suppress(Exception):
            self.lab.shut_down_kernel(self.path)
        with contextlib.suppress(Exception):
            self.context.close()


def _code_prompts(state) -> list[str]:
    return [cell["prompt"].strip() for cell in state["cells"] if cell["code"]] if state else []


def _started(state) -> bool:
    return any(prompt not in ("", "[ ]:") for prompt in _code_prompts(state))


def _finished(state) -> bool:
    """The kernel is idle and no cell is queued or running: all ran, or a cell failed and Run All stopped."""
    prompts = _code_prompts(state)
    return bool(prompts) and state["kernel"] == "idle" and not any("*" in prompt for prompt in prompts)


def _summary(state) -> str:
    if not state:
        return "no notebook"
    prompts = _code_prompts(state)
    ran = sum(prompt[1:-2].isdigit() for prompt in prompts)
    return f"{ran} of {len(prompts)} code cells run, kernel {state['kernel']}"


@pytest.fixture(scope="session")
def open_notebook(lab, browser, deadline):
    """``open_notebook(path, name)``: the notebook (a copy) open in a page of its own; closed at the end."""
    opened: list[Notebook] = []

    def open_(path: Path, name: str) -> Notebook:
        notebook = Notebook(lab, browser, deadline, path, workspace=name)
        opened.append(notebook)
        OPEN_PAGES[name] = notebook.page
        notebook.open()
        return notebook

    yield open_
    for notebook in opened:
        notebook.close()
    OPEN_PAGES.clear()
