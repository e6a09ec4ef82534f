"""The preview page in a real browser: headless Chromium plays a sample's embedded FLAC and the
words whose [data-start, data-end) holds the audio's currentTime are the ones marked "active".

Needs Debian's `chromium` and `chromedriver` (see the Makefile's install target); skipped without them.
"""
from __future__ import annotations

import json
import shutil
import time

import pytest

from pipeline.corpus.preview import write_preview

PLAY_S = 8.0  # seconds of audio to watch (or the whole sample when shorter)
LAG_S = 0.1  # the page updates once per animation frame (and on timeupdate): allow that much lag

# currentTime and the active words, read in one call so that they belong together.
PROBE = """
const s = document.querySelector('.sample.speech'), a = s.querySelector('audio');
return {t: a.currentTime, paused: a.paused, ended: a.ended, duration: a.duration,
        active: Array.from(s.querySelectorAll('.w.active'), w => Array.from(s.querySelectorAll('.w')).indexOf(w))};
"""


def _driver():
    chromium, driver = shutil.which("chromium") or shutil.which("chromium-browser"), shutil.which("chromedriver")
    if not chromium or not driver:
        pytest.skip(f"headless browser test needs chromium and chromedriver on PATH "
                    f"(found chromium={chromium}, chromedriver={driver}); `apt-get install chromium chromium-driver`")
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
              "--autoplay-policy=no-user-gesture-required", "--window-size=1200,900"):
        opts.add_argument(a)
    opts.binary_location = chromium
    return webdriver.Chrome(service=Service(driver), options=opts)


def _containing(spans, t):
    return {i for i, (s, e) in enumerate(spans) if s <= t < e}


def _consistent(spans, t, active):
    """Whether `active` is the set of words holding some time in [t - LAG_S, t] (the set only changes at word edges)."""
    candidates = {t, max(0.0, t - LAG_S)} | {x for se in spans for x in se if t - LAG_S <= x <= t}
    return any(_containing(spans, c) == active for c in candidates)


def test_words_highlight_while_playing(corpus_dir, tmp_path):
    page = tmp_path / "page.html"
    m = json.loads((corpus_dir / "manifest.json").read_text())
    speech = [s["name"] for s in m["splits"] if s["kind"] == "speech"]
    write_preview(corpus_dir, page, per_split=1, splits=speech[:1])
    driver = _driver()
    try:
        driver.get(page.as_uri())
        spans = driver.execute_script(
            "return Array.from(document.querySelector('.sample.speech').querySelectorAll('.w'),"
            " w => [parseFloat(w.dataset.start), parseFloat(w.dataset.end)]);")
        spans = [tuple(x) for x in spans]
        assert spans, "the first speech sample shows its words"
        driver.execute_script("document.querySelector('.sample.speech').scrollIntoView();"
                              "return document.querySelector('.sample.speech audio').play();")
        seen, bad, times = [], [], []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            p = driver.execute_script(PROBE)
            if p["ended"] or (p["t"] > PLAY_S and len({w for _, w in seen}) >= 3):
                break
            if not p["paused"] and p["t"] > 0:
                times.append(p["t"])
                active = set(p["active"])
                if not _consistent(spans, p["t"], active):
                    bad.append((p["t"], sorted(active), sorted(_containing(spans, p["t"]))))
                if active:
                    seen.append((p["t"], max(active)))
                    if len(seen) == 3:
                        driver.save_screenshot(str(tmp_path / "playing.png"))
            time.sleep(0.05)
        assert times and times[-1] > times[0], "currentTime advances while playing"
        assert not bad, f"active words do not match currentTime (t, active, expected): {bad[:5]}"
        assert seen, "at least one word became active while playing"
        assert seen[-1][1] > seen[0][1] and seen[-1][0] > seen[0][0], "highlighting advances to later words"
        if not (tmp_path / "playing.png").exists():
            driver.save_screenshot(str(tmp_path / "playing.png"))
        # clicking a word seeks to its start and marks it
        last = len(spans) - 1
        driver.execute_script(
            "const a = document.querySelector('.sample.speech audio'); a.pause();"
            f"document.querySelector('.sample.speech').querySelectorAll('.w')[{last}].click(); a.pause();")
        p = driver.execute_script(PROBE)
        assert spans[last][0] <= p["t"] < spans[last][1]
        assert last in p["active"]
    finally:
        driver.quit()
    png = tmp_path / "playing.png"
    assert png.stat().st_size > 0 and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
