"""The report is safe with hostile names: markup in any input renders as text, no script runs.

Every value a user controls that reaches the page (slide names, folder and file paths, labels,
statuses, error messages and tracebacks of failed slides, summary.json keys and values,
ablation conditions, run.json and selection.json fields, column names, the title) holds
payloads such as ``<img src=x onerror=...>``. The page is checked as parsed HTML (every test
run) and in headless Chromium (slow): no payload becomes markup, each is shown as text, the
Content-Security-Policy allows only the report's own style and script, and nothing leaves the
page.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import json
import os
import re
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from slidesift.io.outputs import write_png
from slidesift.report import build_report, write_report
from test_report import CHROMIUM_ARGS, _chromium

#: Markup and script in every shape a name could carry it; each sets ``window.__pwned`` if run.
PAYLOADS = (
    "<img src=x onerror=window.__pwned=1>",
    '"><script>window.__pwned=2</script>',
    "'><svg onload=window.__pwned=3>",
    "javascript:window.__pwned=4",
    "</style><script>window.__pwned=5</script><style>",
    '</title></textarea><iframe srcdoc="<script>parent.__pwned=6</script>"></iframe>',
    '<a href="javascript:window.__pwned=7">x</a> <!-- ]]> {{7*7}} &amp; &lt;',
    "\u202egnp.exe \u200b\ufeff e\u0301 \U0001f600 \u0000",  # right-to-left, zero-width, NUL
)
#: The payloads without ``/`` (they can be file and folder names).
FILE_SAFE = tuple(p for p in PAYLOADS if "/" not in p and "\0" not in p)
LONE = "\ud800"  # a lone surrogate, as JSON may spell it: shown as U+FFFD
TAGS = {"html", "head", "meta", "title", "style", "body", "header", "h1", "h2", "h3", "p",
        "nav", "a", "main", "section", "div", "table", "thead", "tbody", "tr", "th", "td",
        "button", "ul", "li", "b", "span", "details", "summary", "pre", "code", "figure",
        "figcaption", "img", "article", "footer", "script"}  # fmt: skip


@dataclass(frozen=True)
class Hostile:
    out: Path
    run: Path
    spread: Path


def _shown(payload: str) -> str:
    """The payload as the page shows it (NUL and lone surrogates become U+FFFD)."""
    return payload.replace("\0", "\ufffd").replace(LONE, "\ufffd")


def _png(path: Path, seed: int) -> None:
    img = np.random.default_rng(seed).integers(0, 256, (24, 32, 3), dtype=np.uint8)
    write_png(path, img)


def _hostile(root: Path) -> Hostile:
    """A cohort folder, a run folder and a spread file made of payloads."""
    p = PAYLOADS
    out = root / FILE_SAFE[0]  # the folder's name is in the default title and the header
    out.mkdir()
    columns = ["slide", "label", "vote", "jaccard", "status", "error", "error_type", p[1]]
    rows = [
        [FILE_SAFE[0], p[3], p[4], "0.5", "ok", "", "", p[6]],
        [p[1], p[5], p[0], "<b>0.9</b>", "ok", "", "", ""],
        [p[6], "", "", "", "failed", p[2] + p[1], p[5], p[0]],
        [p[7], "", "", "0.25", p[1], "", "", ""],  # a status that is not ok: failed
    ]
    with (out / "scores.csv").open("w", encoding="utf-8", newline="") as fh:
        csv.writer(fh).writerows([columns, *rows])
    for i, name in enumerate(FILE_SAFE):  # pictures found by hostile names
        _png(out / f"{name}_overlay.png", i)
    (out / f"{FILE_SAFE[0]}_errors.png").write_text(p[2], encoding="utf-8")  # not a PNG
    summary = {
        p[0]: p[1],
        "mean_jaccard": p[2],
        "checkpoint": p[3],
        "lone": LONE,
        "nested": {p[4]: [p[6], None]},
        "failures": [{"slide": p[6], "error_type": p[5], "error": p[2], "traceback": p[5] + p[1]}],
    }
    (out / "summary.json").write_text(json.dumps(summary), encoding="utf-8")
    ablation = [{"condition": p[1], "figures": {"jaccard": p[0], "slides": p[5]}}]
    (out / "ablation.json").write_text(json.dumps(ablation), encoding="utf-8")
    run = root / FILE_SAFE[1]
    run.mkdir()
    (run / "run.json").write_text(json.dumps(
        {"classes": [p[0], p[1]], "device": p[5], "slidesift_version": p[2] + LONE,
         "tileset": {"tile": p[3], "longest": p[4]}}), encoding="utf-8")  # fmt: skip
    epochs = [{"epoch": e, "eligible": True, "mean_jaccard": e / 4} for e in (1, 2)]
    (run / "selection.json").write_text(json.dumps(
        {"metric": p[1], "best": f"/x/{FILE_SAFE[2]}.safetensors", "epoch": 2,
         "epochs": epochs}), encoding="utf-8")  # fmt: skip
    spread = root / f"{FILE_SAFE[2]}.json"
    spread.write_text('[{"tile": 100, "n_tiles": 9, "lo": 2.0, "hi": 7.0}]', encoding="utf-8")
    return Hostile(out, run, spread)


@pytest.fixture
def hostile(tmp_path: Path) -> Hostile:
    return _hostile(tmp_path)


class _Page(HTMLParser):
    """Every tag with its attributes, the text, comments and the one style and script."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str]]] = []
        self.text: list[str] = []
        self.comments: list[str] = []
        self.raw: dict[str, list[str]] = {"style": [], "script": []}
        self._in: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, {k: v or "" for k, v in attrs}))
        self._in = tag if tag in self.raw else None

    def handle_endtag(self, tag: str) -> None:
        self._in = None

    def handle_data(self, data: str) -> None:
        if self._in is not None:
            self.raw[self._in].append(data)
        else:
            self.text.append(data)

    def handle_comment(self, data: str) -> None:
        self.comments.append(data)


def _sha256(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


def check_markup(text: str) -> _Page:
    """Assert the page is only the report's own markup; returns it parsed."""
    page = _Page()
    page.feed(text)
    page.close()
    assert not page.comments
    assert {t for t, _ in page.tags} <= TAGS
    assert [t for t, _ in page.tags].count("script") == 1
    assert [t for t, _ in page.tags].count("style") == 1
    for tag, attrs in page.tags:
        assert not [a for a in attrs if a.startswith("on") or a in ("style", "srcdoc")], tag
        if "href" in attrs:
            assert attrs["href"].startswith("#"), attrs
        if "src" in attrs:
            assert re.fullmatch(r"data:image/(png|jpeg);base64,[A-Za-z0-9+/=]+", attrs["src"])
    [policy] = [a["content"] for t, a in page.tags
                if t == "meta" and a.get("http-equiv") == "Content-Security-Policy"]  # fmt: skip
    directives = dict(d.strip().split(" ", 1) for d in policy.split(";"))
    assert directives == {
        "default-src": "'none'",
        "img-src": "data:",
        "style-src": _sha256("".join(page.raw["style"])),
        "script-src": _sha256("".join(page.raw["script"])),
        "base-uri": "'none'",
        "form-action": "'none'",
        "require-trusted-types-for": "'script'",
        "trusted-types": "'none'",
    }
    return page


def test_hostile_names_are_text_in_the_markup(hostile: Hostile) -> None:
    text = build_report(hostile.out, run=hostile.run, rails_spread=hostile.spread)
    page = check_markup(text)
    shown = "".join(page.text)
    attributes = [v for _, a in page.tags for v in a.values()]
    for payload in PAYLOADS:
        assert _shown(payload) in shown or _shown(payload) in attributes, payload
    assert "\ufffd" in shown  # the lone surrogate
    header = shown.split("Cohort summary")[0]
    assert f"slidesift report: {FILE_SAFE[0]}" in header and FILE_SAFE[1] in header
    assert f"{FILE_SAFE[0]}_errors.png is not a readable PNG" in shown
    titles = [a["title"] for t, a in page.tags if t == "th" and "title" in a]
    assert PAYLOADS[1] in titles  # a column named by a payload
    given = build_report(hostile.out, title=PAYLOADS[5])
    assert f"<title>{PAYLOADS[5]}" not in given
    check_markup(given)


def test_a_path_that_is_not_utf8_is_written(tmp_path: Path) -> None:
    """A folder name with bytes that are not UTF-8 (Python holds them as surrogates)."""
    folder = Path(os.fsdecode(os.fsencode(tmp_path) + b"/cohort-\xff\xfe<b>"))
    folder.mkdir()
    (folder / "scores.csv").write_text("slide\nz\n", encoding="utf-8")
    text = write_report(folder).read_text(encoding="utf-8")
    assert "cohort-\ufffd\ufffd&lt;b&gt;" in text
    check_markup(text)


@pytest.mark.learn
def test_a_slide_that_fails_with_markup_in_its_error(tmp_path: Path) -> None:
    """Through run_cohort (what evaluate runs): error and traceback go through scores.csv."""
    from conftest import discriminative_checkpoint
    from slidesift.cohort import run_cohort
    from slidesift.manifest import ManifestEntry

    ck = discriminative_checkpoint(96, tmp_path)
    assert ck.path is not None
    slides = tmp_path / FILE_SAFE[2]
    slides.mkdir()
    bad = slides / f"{FILE_SAFE[0]}.svs"
    bad.write_text(PAYLOADS[1], encoding="utf-8")  # not a slide
    entries = [ManifestEntry(bad, label=PAYLOADS[5]),
               ManifestEntry(slides / f"{FILE_SAFE[1]}.tif", label=PAYLOADS[0])]  # fmt: skip
    out = tmp_path / "out"
    result = run_cohort(ck.path, entries, out=out, scheduler="sync")
    assert [r.status for r in result.rows] == ["failed", "failed"]
    assert FILE_SAFE[0] in result.rows[0].error  # the path, holding markup, is in the message
    text = build_report(out)
    page = check_markup(text)
    shown = "".join(page.text)
    for row in result.rows:
        assert row.name in shown and row.error in shown


# --- in a real browser -----------------------------------------------------------------------

#: Installed before the page's own script: CSP violations, as the page sees them.
WATCH = """window.__csp = [];
document.addEventListener("securitypolicyviolation",
  e => window.__csp.push(e.violatedDirective + " " + e.blockedURI));"""

#: What an injected script would try, run after load: each must be refused by the CSP.
PROBES = """async () => {
  const tried = {};
  const attempt = async (name, fn) => {
    try { await fn(); tried[name] = "done"; } catch (e) { tried[name] = "threw"; }
  };
  await attempt("script", () => {  // a text node: textContent is a Trusted Types sink
    const s = document.createElement("script");
    s.appendChild(document.createTextNode("window.__pwned = 'script'"));
    document.body.appendChild(s);
  });
  await attempt("handler", () => {
    const i = document.createElement("img");
    i.setAttribute("onerror", "window.__pwned = 'handler'");
    i.src = "data:image/png;base64,AAAA";
    document.body.appendChild(i);
  });
  await attempt("image", () => {
    const i = document.createElement("img");
    i.src = "http://127.0.0.1:9/x.png";
    document.body.appendChild(i);
  });
  await attempt("style", () => {
    const s = document.createElement("style");
    s.appendChild(document.createTextNode("body{background:red}"));
    document.head.appendChild(s);
  });
  await attempt("style attribute", () => {
    const d = document.createElement("div");
    d.setAttribute("style", "color:red");
    document.body.appendChild(d);
  });
  await attempt("fetch", () => fetch("http://127.0.0.1:9/"));
  await attempt("html sink", () => document.body.insertAdjacentHTML("beforeend", "<b>x</b>"));
  return tried;
}"""


@pytest.mark.slow
def test_hostile_report_in_chromium_runs_no_script_and_keeps_its_csp(hostile: Hostile) -> None:
    chromium = _chromium()
    sync_api = pytest.importorskip(
        "playwright.sync_api", reason="playwright is in the dev extra: pip install -e '.[dev]'"
    )
    path = write_report(hostile.out, run=hostile.run, rails_spread=hostile.spread)
    dialogs: list[str] = []
    console: list[str] = []
    requests: list[str] = []  # every request but the page's own file
    refused: list[str] = []  # requests the CSP stopped before they were sent
    routed: list[str] = []  # requests that reached the network layer (aborted there)

    variant = path.with_name("variant.html")  # the page without Trusted Types, below
    documents = {path.resolve().as_uri(), variant.resolve().as_uri()}

    def route(r: Any) -> None:
        if r.request.url in documents:
            r.continue_()
        else:
            routed.append(r.request.url)
            r.abort()

    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
            page.on("console", lambda m: console.append(f"{m.type}: {m.text}"))
            page.on("pageerror", lambda e: console.append(f"pageerror: {e}"))
            page.on("request", lambda r: None if r.url in documents
                    else requests.append(r.url))  # fmt: skip
            page.on("requestfailed", lambda r: refused.append(r.url) if r.failure == "csp"
                    else None)  # fmt: skip
            page.route("**/*", route)
            page.add_init_script(WATCH)
            page.goto(path.resolve().as_uri())
            page.wait_for_load_state("load")
            page.evaluate("() => document.querySelectorAll('details').forEach(d => d.open = true)")
            page.evaluate("() => Array.from(document.images).forEach(i => i.scrollIntoView())")
            page.wait_for_timeout(300)  # lazy pictures decode; violations are reported async
            state = page.evaluate("""() => ({
              pwned: typeof window.__pwned, csp: window.__csp, text: document.body.innerText,
              title: document.title, scripts: document.scripts.length,
              handlers: Array.from(document.querySelectorAll("*")).flatMap(
                e => Array.from(e.attributes).map(a => a.name).filter(n => n.startsWith("on"))),
              foreign: document.querySelectorAll("iframe,svg,object,embed,form,link").length,
              styles: document.querySelectorAll("style,[style]").length,
              headers: Array.from(document.querySelectorAll("th[title]")).map(t => t.title)})""")
            assert state["pwned"] == "undefined" and dialogs == []
            assert state["csp"] == [] and console == [] and requests == [] and routed == []
            assert state["scripts"] == 1 and state["handlers"] == [] and state["foreign"] == 0
            assert state["styles"] == 1
            for payload in PAYLOADS:  # shown as text (a column name: as its header's title)
                assert _shown(payload) in state["text"] or payload in state["headers"], payload
            assert state["title"] == f"slidesift report: {FILE_SAFE[0]}"
            # the report's own script runs (allowed by its hash): the table sorts
            page.click("#metrics-table th[title=slide] button")
            assert page.get_attribute("#metrics-table th[title=slide]", "aria-sort") == "ascending"
            # what an injected script would try is refused, and reported as a violation
            tried, blocked = _probe(page)
            # the script-src and script-src-attr directives hold on their own too: the same
            # page without the Trusted Types directives (which refuse script text first)
            html = path.read_text(encoding="utf-8")
            lax = html.replace("; require-trusted-types-for 'script'; trusted-types 'none'", "")
            assert lax != html
            variant.write_text(lax, encoding="utf-8")
            page.goto(variant.resolve().as_uri())
            page.wait_for_load_state("load")
            tried_lax, blocked_lax = _probe(page)
        finally:
            browser.close()
    assert dialogs == [] and routed == []
    assert requests == refused == ["http://127.0.0.1:9/x.png"] * 2  # the probes' images
    assert (tried["fetch"], tried["html sink"]) == ("threw", "threw")
    assert {"require-trusted-types-for", "img-src", "style-src-elem", "style-src-attr",
            "connect-src"} <= blocked, blocked  # fmt: skip
    assert tried_lax["handler"] == "done"  # set: its code is refused when the image fails
    assert {"script-src-elem", "script-src-attr", "img-src", "style-src-elem", "style-src-attr",
            "connect-src"} <= blocked_lax, blocked_lax  # fmt: skip


def _probe(page: Any) -> tuple[dict[str, str], set[str]]:
    """Run :data:`PROBES`; what each did and the directives that refused something.

    Also asserts that no probe's script ran (``window.__pwned`` stays undefined).
    """
    tried = page.evaluate(PROBES)
    page.wait_for_function("() => window.__csp.length >= 5", timeout=5_000)
    page.wait_for_timeout(200)  # the last violations are reported asynchronously
    assert page.evaluate("() => typeof window.__pwned") == "undefined"
    refused = {v.split(" ")[0] for v in page.evaluate("() => window.__csp")}
    return tried, refused
