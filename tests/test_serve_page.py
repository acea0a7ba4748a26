"""The web page in a real headless Chromium: pick a demo image, see search.py's hits for
it (same paths, same order, same scores), their thumbnails and labels; the threshold
control hides hits below it and says "No match" when none is left. A screenshot of the
page with its hits is kept (SCREENSHOT_DIR, default: the test's temporary directory)."""
import os
import shutil

import pytest
from cdp import Browser
from test_index import net  # noqa: F401 (fixture)
from test_serve_process import Service, demo_index, search_py  # noqa: F401 (fixture)

pytestmark = pytest.mark.slow

HITS = """[...document.querySelectorAll('#results .hit')].map(h => ({rank: +h.dataset.rank, path: h.dataset.path,
  score: +h.dataset.score, label: h.querySelector('.label').textContent, thumb: !!h.querySelector('img')}))"""


def set_threshold(browser, value):
    browser.evaluate(f"""(() => {{ const box = document.getElementById('use-threshold');
      if (!box.checked) box.click();
      const field = document.getElementById('threshold-number');
      field.value = {value}; field.dispatchEvent(new Event('input')); }})()""")


def test_page_shows_search_py_hits_for_a_picked_image(demo_index, tmp_path):  # noqa: F811
    index_dir, _, images = demo_index
    query = images[4]
    expected = search_py(index_dir, query, 10, tmp_path)
    service = Service(index_dir)
    browser = Browser(str(tmp_path / "profile"))
    try:
        browser.open(service.url)
        info = browser.wait_for("document.getElementById('info').textContent.includes('generation') && "
                                "document.getElementById('info').textContent")
        assert "30 images" in info and "ResNet18" in info
        browser.choose_file("#file", query)
        browser.wait_for("document.querySelectorAll('#results .hit img').length === 10")
        hits = browser.evaluate(HITS)
        assert [h["path"] for h in hits] == [h["path"] for h in expected]
        assert [h["rank"] for h in hits] == list(range(1, 11))
        assert all(abs(h["score"] - e["score"]) < 1e-4 for h, e in zip(hits, expected))
        assert [h["label"] for h in hits] == [f"label {e['label']}" for e in expected]
        assert browser.evaluate("document.getElementById('preview').naturalWidth") == 48
        shot = browser.screenshot(str(tmp_path / "page.png"))
        if os.environ.get("SCREENSHOT_DIR"):
            shutil.copy(shot, os.path.join(os.environ["SCREENSHOT_DIR"], "serve_page.png"))
        set_threshold(browser, round((expected[2]["score"] + expected[3]["score"]) / 2, 6))
        assert len(browser.evaluate(HITS)) == 3
        assert browser.evaluate("document.getElementById('nomatch')") is None
        set_threshold(browser, 1.01)  # above any cosine similarity
        assert browser.evaluate(HITS) == []
        no_match = browser.evaluate("document.getElementById('nomatch').textContent")
        assert "No match" in no_match and f"{expected[0]['score']:.4f}" in no_match
        assert browser.errors == []
    finally:
        browser.close()
        service.stop()
