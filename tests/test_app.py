"""The web page of `melanoma-app` (nbs/93_app.ipynb) on a tiny run trained here on synthetic data, as in
tests/test_cli.py: headless with Streamlit's `AppTest`, and end to end in headless Chromium.

The browser test skips, with the reason, where Chromium, its driver or selenium are missing; `.ci/run`
installs Debian's `chromium` and `chromium-driver` so CI runs it. Set MELANOMA_APP_SCREENSHOT=<file.png>
to keep its screenshot (and MELANOMA_APP_SCREENSHOT_RUN / MELANOMA_APP_SCREENSHOT_IMAGE to take it with
another run and image: this is how nbs/images/app.png was made).
"""
import io, os, shutil, socket, subprocess, sys, tempfile, time, urllib.request
from pathlib import Path

import numpy as np, pandas as pd, pytest
from PIL import Image
from streamlit.testing.v1 import AppTest

from melanoma_nbdev.data import CLASSES
from melanoma_nbdev.profiles import save_json
from melanoma_nbdev.predict import run_predict
from melanoma_nbdev.scoring import DISCLAIMER
from melanoma_nbdev.app import PAGE_SCRIPT, SMOKE_MODELS, melanoma_app

BIN = Path(sys.executable).parent
CHROMIUM, CHROMEDRIVER = Path('/usr/bin/chromium'), Path('/usr/bin/chromedriver')


@pytest.fixture(scope='module')
def runs(tmp_path_factory, tiny_ensemble):
    "Two runs with the session's tiny ensemble (conftest's `tiny_ensemble`): one labelled smoke, one not; and the data."
    cfg, df = tiny_ensemble
    root = tmp_path_factory.mktemp('app')
    smoke, other = root/'runs'/'smoke-tiny', root/'runs'/'other-tiny'
    for r in (smoke, other): shutil.copytree(cfg.parent, r/'kfold')
    save_json(dict(profile='smoke', smoke=True, git_commit='test', date_utc='2026-01-01T00:00:00+00:00'), smoke/'provenance.json')
    save_json(dict(profile='test-not-smoke', smoke=False, git_commit='test', date_utc='2026-01-01T00:00:00+00:00'), other/'provenance.json')
    return smoke, other, df


def page(monkeypatch, run, **env) -> AppTest:
    "The page, as `melanoma-app --run run` starts it, after its first run."
    monkeypatch.setenv('MELANOMA_APP_RUN', str(run))
    for k, v in env.items(): monkeypatch.setenv(f'MELANOMA_APP_{k.upper()}', str(v))
    at = AppTest.from_string(PAGE_SCRIPT, default_timeout=180).run()
    assert not at.exception, at.exception
    return at


def app_temp_dirs() -> set:
    return set(Path(tempfile.gettempdir()).glob('melanoma-app-*'))


def test_page_loads_with_the_notice_and_the_smoke_banner(runs, monkeypatch):
    smoke, other, _ = runs
    at = page(monkeypatch, smoke)
    assert DISCLAIMER in at.warning[0].value          # the notice comes first
    assert any(SMOKE_MODELS in e.value for e in at.error)
    assert any('run `smoke-tiny`' in m.value and 'profile `smoke`' in m.value for m in at.markdown)
    assert at.file_uploader[0].accept_multiple_files and set(at.file_uploader[0].allowed_type) >= {'.jpg', '.png'}
    at = page(monkeypatch, other)
    assert DISCLAIMER in at.warning[0].value and not any(SMOKE_MODELS in e.value for e in at.error) and len(at.warning) == 1


def test_page_warns_of_a_reduced_run(runs, monkeypatch, tmp_path):
    "A full run made smaller with --set: the page says so, as melanoma-predict does."
    _, other, _ = runs
    red = tmp_path/'runs'/'reduced'; shutil.copytree(other, red)
    save_json(dict(profile='full', smoke=False, overrides={'n_images': 700}, git_commit='test', date_utc='2026-01-01T00:00:00+00:00'), red/'provenance.json')
    at = page(monkeypatch, red)
    assert any('REDUCED run' in w.value and 'n_images=700' in w.value for w in at.warning[1:]), [w.value for w in at.warning]


def test_upload_gives_the_classes_of_melanoma_predict(runs, monkeypatch, tmp_path):
    smoke, _, df = runs
    imgs = [Path(p) for p in df.path.iloc[:2]]
    ref = run_predict(imgs, smoke, tmp_path/'pred', echo=lambda s: None)   # melanoma-predict as a function (tests/test_cli.py runs the script)
    before = app_temp_dirs()
    at = page(monkeypatch, smoke)
    at.file_uploader[0].set_value([(p.name, p.read_bytes(), 'image/jpeg') for p in imgs]).run()
    assert not at.exception, at.exception
    tables = [d.value for d in at.dataframe if 'class' in d.value.columns]
    assert len(tables) == 2
    for top3, (_, row) in zip(tables, ref.iterrows()):
        assert list(top3['class']) == [row.top1, row.top2, row.top3]
        np.testing.assert_allclose(top3.probability.to_numpy(), row[['p_top1', 'p_top2', 'p_top3']].to_numpy(float), atol=1e-6)
        assert top3.probability.is_monotonic_decreasing
    risks = [e.value for e in (*at.error, *at.warning, *at.info, *at.success) if e.value.startswith('**Risk:')]
    assert sorted(v.split('.')[0].removeprefix('**Risk: ') for v in risks) == sorted(ref.risk)
    assert [s.label for s in at.selectbox] == ['Grad-CAM of class'] * 2 and at.selectbox[0].value == ref.top1[0]
    at.selectbox[0].set_value(ref.top3[0]).run()       # the Grad-CAM of another class
    assert not at.exception, at.exception
    assert app_temp_dirs() == before                     # nothing of the uploads is left on disk


def test_bad_uploads_show_the_error_not_a_traceback(runs, monkeypatch):
    smoke, _, df = runs
    good = Path(df.path.iloc[0]).read_bytes()            # 200 x 150 pixels
    big = io.BytesIO(); Image.new('RGB', (300, 200)).save(big, format='PNG')
    before = app_temp_dirs()
    at = page(monkeypatch, smoke, max_pixels=40_000)
    at.file_uploader[0].set_value([('notes.jpg', b'just some text', 'image/jpeg'), ('cut.jpg', good[:1500], 'image/jpeg'),
                                   ('big.png', big.getvalue(), 'image/png')]).run()
    assert not at.exception, at.exception
    errors = '\n'.join(e.value for e in at.error)
    for msg in ('notes.jpg is not an image', 'cut.jpg is corrupt or truncated', 'big.png is 300x200 = 60,000 pixels, over max_pixels=40,000'):
        assert msg in errors, errors
    assert 'Traceback' not in errors and tempfile.gettempdir() not in errors and not at.dataframe
    assert app_temp_dirs() == before


def test_without_models(tmp_path, monkeypatch, capsys):
    (tmp_path/'empty').mkdir()
    at = page(monkeypatch, tmp_path/'empty')
    assert DISCLAIMER in at.warning[0].value and 'holds no trained fold models' in at.error[0].value and not at.file_uploader
    # the command stops before starting a server (called in-process: the browser test below runs the installed script)
    with pytest.raises(SystemExit) as e: melanoma_app(run=str(tmp_path/'empty'))
    assert str(e.value).startswith('error: ') and 'holds no trained fold models' in str(e.value) and 'make report' in str(e.value)
    assert capsys.readouterr().out.startswith(DISCLAIMER)
    with pytest.raises(SystemExit, match='--max-pixels 100 is out of range'): melanoma_app(run=str(tmp_path/'empty'), max_pixels=100)


def free_port() -> int:
    with socket.socket() as s: s.bind(('127.0.0.1', 0)); return s.getsockname()[1]


def browser_missing() -> str | None:
    "Why the browser test cannot run here, or None."
    for p in (CHROMIUM, CHROMEDRIVER):
        if not p.exists(): return f"{p} not found (Debian: apt-get install chromium chromium-driver; .ci/run does this)"
    try: import selenium  # noqa: F401
    except ImportError: return "selenium not installed (pip install -e '.[dev]')"


def test_browser_end_to_end(runs, tmp_path):
    if why := browser_missing(): pytest.skip(why)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait
    smoke, _, df = runs
    run = Path(os.environ.get('MELANOMA_APP_SCREENSHOT_RUN') or smoke)
    image = Path(os.environ.get('MELANOMA_APP_SCREENSHOT_IMAGE') or df.path.iloc[0])
    port = free_port()
    app = subprocess.Popen([str(BIN/'melanoma-app'), '--run', str(run), '--port', str(port)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    driver = None
    try:
        for _ in range(240):                              # the server is up when its health check answers
            try:
                with urllib.request.urlopen(f'http://127.0.0.1:{port}/_stcore/health', timeout=2) as r:
                    if r.read() == b'ok': break
            except OSError: pass
            assert app.poll() is None, app.stdout.read()
            time.sleep(0.5)
        else: pytest.fail('melanoma-app did not answer within 120 s')
        opts = webdriver.ChromeOptions(); opts.binary_location = str(CHROMIUM)
        for a in ('--headless=new', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
                  '--disable-component-update', '--disable-sync', '--disable-dev-shm-usage', f'--user-data-dir={tmp_path/"chromium"}', '--window-size=1400,1500'):
            opts.add_argument(a)
        driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=opts)
        driver.get(f'http://127.0.0.1:{port}')
        wait = WebDriverWait(driver, 180, poll_frequency=0.5)
        upload = wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, 'input[type="file"]'))[0]
        assert DISCLAIMER.split(';')[0] in driver.find_element(By.TAG_NAME, 'body').text
        upload.send_keys(str(image))
        wait.until(lambda d: all(s in d.find_element(By.TAG_NAME, 'body').text for s in ('Risk: ', 'Grad-CAM of class', 'CSV row')))
        # the uploaded image and its Grad-CAM overlay have loaded
        wait.until(lambda d: d.execute_script("return [...document.images].filter(i => i.complete && i.naturalWidth > 0 && i.src.includes('/media/')).length") >= 2)
        time.sleep(1)                                     # let the bar chart finish drawing
        png = tmp_path/'app.png'
        assert driver.save_screenshot(str(png))
        body = driver.find_element(By.TAG_NAME, 'body').text
        for s in (image.name, 'Grad-CAM of class', 'CSV row', 'SMOKE MODELS'): assert s in body, (s, body)
        assert 'Traceback' not in body, body
        if dest := os.environ.get('MELANOMA_APP_SCREENSHOT'): shutil.copy(png, dest)
    finally:
        if driver: driver.quit()
        app.terminate()
        try: app.wait(timeout=30)
        except subprocess.TimeoutExpired: app.kill(); app.wait()
    assert app.returncode == 0, app.stdout.read()         # stopped by SIGTERM: a clean exit
    with pytest.raises(ConnectionRefusedError): socket.create_connection(('127.0.0.1', port), timeout=5)   # the server is gone
