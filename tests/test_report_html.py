"""``--format html`` (issue 14 item 3): one self-contained page per bundled model whose embedded
JSON is the report document and whose shown numbers are the document's; a real browser renders
it where one is installed."""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import xml.etree.ElementTree as ET

import pytest

from conftest import MODELS
from lipgraph.cli import main
from lipgraph.report.html import _fmt

#: SeqLip (chains on the page) where it is quick; the two convolutional models without it.
SLOW = {"lenet", "resnet_small"}


def page(capsys, tmp_path, name):
    flags = ["--methods", "autolip,lower" if name in SLOW else "autolip,seqlip,lower", "--lower-restarts", "1", "-q"]
    out = tmp_path / f"{name}.html"
    code = main(["analyze", str(MODELS / f"{name}.onnx"), *flags, "--format", "html", "-o", str(out)])
    assert code in (0, 1), capsys.readouterr().err
    return out.read_text(), flags


def strip_seconds(doc):
    if isinstance(doc, dict):
        return {k: strip_seconds(v) for k, v in doc.items() if k != "seconds"}
    return [strip_seconds(v) for v in doc] if isinstance(doc, list) else doc


def embedded(root) -> dict:
    script = root.find(".//script[@id='lipgraph-report']")
    assert script.get("type") == "application/json"
    return json.loads(script.text)


@pytest.mark.parametrize("name", sorted(p.stem for p in MODELS.glob("*.onnx")))
def test_page_shows_the_document(capsys, tmp_path, name):
    text_of_page, _ = page(capsys, tmp_path, name)
    root = ET.fromstring(text_of_page.split("\n", 1)[1])          # well-formed markup (after the doctype)
    doc = embedded(root)
    # self-contained: nothing fetched from anywhere, no executable script
    assert not re.search(r"(src|href)\s*=", text_of_page) and "<script>" not in text_of_page
    assert "@import" not in text_of_page
    # the numbers shown are the document's
    shown = {td.get("data-method"): td.text for td in root.iter("td") if td.get("data-method")}
    assert shown == {m["name"]: _fmt(m["value"]) for m in doc["methods"]}
    text = "".join(root.itertext())
    for m in doc["methods"]:
        assert m["domain"] in text
    for row in doc["table"]:
        assert row["name"] in text and _fmt(row["bound"], row["label"] is not None) in text
    for d in doc["diagnostics"]:
        assert d["message"] in text
    if doc["upper_bound"]:
        assert f"{doc['upper_bound']['value']:.6g}" in root.find(".//p[@id='summary']").text
    assert root.findall(".//{http://www.w3.org/2000/svg}svg")


def test_embedded_document_is_the_cli_json(capsys, tmp_path):
    text_of_page, flags = page(capsys, tmp_path, "mlp")
    main(["analyze", str(MODELS / "mlp.onnx"), *flags, "--format", "json"])
    doc = json.loads(capsys.readouterr().out)
    assert strip_seconds(embedded(ET.fromstring(text_of_page.split("\n", 1)[1]))) == strip_seconds(doc)


def browser() -> str | None:
    return next((shutil.which(b) for b in ("chromium", "chromium-browser", "google-chrome") if shutil.which(b)), None)


@pytest.mark.skipif(browser() is None, reason="no headless Chromium on this machine (install chromium to run it)")
def test_page_renders_in_a_browser(capsys, tmp_path):
    text_of_page, _ = page(capsys, tmp_path, "mlp")
    doc = embedded(ET.fromstring(text_of_page.split("\n", 1)[1]))
    path = tmp_path / "mlp.html"
    dom = subprocess.run([browser(), "--headless", "--disable-gpu", "--no-sandbox", "--enable-logging=stderr",
                          "--dump-dom", path.as_uri()], capture_output=True, text=True, timeout=60)
    assert dom.returncode == 0
    assert "Uncaught" not in dom.stderr and "CONSOLE" not in dom.stderr.upper().replace("CONSOLE_", "")
    assert f"{doc['upper_bound']['value']:.6g}" in dom.stdout
