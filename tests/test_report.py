"End-to-end tests of the report pipeline (`melanoma_nbdev.pipeline`) on synthetic data, in a copy of the project."
import json, os, re, shutil, subprocess, sys
from pathlib import Path
import nbformat, pytest
from melanoma_nbdev.data import make_synthetic
from melanoma_nbdev.profiles import project_root
from melanoma_nbdev.pipeline import run_report, RunError
from melanoma_nbdev.render import render_run

ROOT = project_root(Path(__file__).parent)
BIN = Path(sys.executable).parent

def copy_project(dest: Path, notebooks=None) -> Path:
    "A minimal copy of the project (settings, Quarto config, notebooks) to run the pipeline in."
    dest.mkdir(parents=True)
    for f in ('settings.ini', 'pyproject.toml', '_quarto.yml', 'report.css'): shutil.copy(ROOT/f, dest/f)
    (dest/'nbs').mkdir()
    for nb in notebooks or sorted((ROOT/'nbs').glob('*.ipynb')): shutil.copy(nb, dest/'nbs'/nb.name)
    return dest

@pytest.fixture(scope='module')
def syn(tmp_path_factory):
    return make_synthetic(tmp_path_factory.mktemp('data')/'syn', n_lesions=350)

@pytest.fixture(scope='module')
def run(tmp_path_factory, syn):
    root = copy_project(tmp_path_factory.mktemp('proj')/'p')
    # the data chapter and the appendix: enough to test the pipeline; the training chapters are tested by nbdev-test
    old = os.environ.get('MPLBACKEND'); os.environ['MPLBACKEND'] = 'Agg'  # a caller's non-inline backend must not drop the chapters' figures
    try: return run_report('smoke', data_path=str(syn), name='t1', root=root, only=ONLY), root
    finally: os.environ.pop('MPLBACKEND') if old is None else os.environ.__setitem__('MPLBACKEND', old)

ONLY = r'^(00|9\d)_'

def test_run_executes_the_numbered_notebooks_in_order(run):
    r, root = run
    prov = json.loads((r/'provenance.json').read_text())
    names = [n['notebook'] for n in prov['notebooks']]
    assert names == sorted(p.name for p in (root/'nbs').glob('[0-9][0-9]_*.ipynb') if re.match(ONLY, p.name)) and len(names) >= 3
    assert all(n['status'] == 'ok' for n in prov['notebooks']), prov['notebooks']
    assert prov['profile'] == 'smoke' and prov['smoke'] and prov['hardware']['cpu_cores'] >= 1
    for k in ('git_commit', 'date_utc', 'packages', 'parameters'): assert prov[k], k
    assert (root/'runs'/'latest').resolve() == r.resolve()
    executed = nbformat.read(r/'notebooks'/'00_data.ipynb', as_version=4)
    assert any('injected-parameters' in c.metadata.get('tags', []) for c in executed.cells)

def test_results_are_lesion_grouped(run):
    import pandas as pd
    r, _ = run
    for f in ('folds.csv', 'folds_full.csv'):
        folds = pd.read_csv(r/'results'/f)
        assert folds.groupby('lesion_id').fold.nunique().max() == 1, f
    assert json.loads((r/'results'/'data.json').read_text())['data'].endswith('syn')

def test_site_and_pdf(run):
    r, _ = run
    index, data = (r/'site'/'index.html').read_text(), (r/'site'/'00_data.html').read_text()
    assert 'melanoma_nbdev' in index and '00_data.html' in index  # sidebar links the chapters
    assert '0 Data: HAM10000, checked and split by lesion' in data and 'Smoke run: dataset facts hold' in data and 'callout-warning' not in data
    assert '<img' in data  # the batch figure
    assert (r/'site'/'search.json').exists()
    pdf = (r/'report.pdf').read_bytes()
    assert pdf[:5] == b'%PDF-' and len(pdf) > 50_000
    md = (r/'book'/'_pdf'/'report.md').read_text()
    assert '# 0 Data: HAM10000, checked and split by lesion' in md
    for title in ('# 90 Run profiles and provenance', '# 91 The report pipeline'):  # appendices: on the website, not in the PDF
        assert title not in md, title
    assert '90 Run profiles and provenance' in (r/'site'/'90_profiles.html').read_text()
    assert 'SMOKE RUN' in md and list((r/'book'/'_pdf'/'media').glob('*.[pj][np]g'))  # figures, compressed as PNG or JPEG

def test_never_overwrites_an_earlier_run(run, syn):
    r, root = run
    before = (r/'provenance.json').read_bytes()
    with pytest.raises(RunError, match='holds an earlier run'):
        run_report('smoke', data_path=str(syn), name='t1', root=root, render=False, only=ONLY)
    assert (r/'provenance.json').read_bytes() == before

def test_failing_notebook_stops_the_run(tmp_path):
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("profile = 'smoke'\nrun_dir = None", metadata={'tags': ['parameters']}),
                                         nbformat.v4.new_code_cell("raise ValueError('boom')")])
    nbformat.write(nb, tmp_path/'00_fail.ipynb')
    root = copy_project(tmp_path/'p', [tmp_path/'00_fail.ipynb'])
    with pytest.raises(RunError, match=r'00_fail.ipynb failed at cell \d+: ValueError: boom'):
        run_report('smoke', name='f', root=root)
    prov = json.loads((root/'runs'/'f'/'provenance.json').read_text())
    assert prov['notebooks'][0]['status'] == 'failed'
    assert (root/'runs'/'f'/'notebooks'/'00_fail.ipynb').exists()

@pytest.mark.parametrize('args,msg', [(['--profile', 'nope'], "Unknown profile 'nope'"),
                                      (['--set', 'epochs=three'], 'is not int'),
                                      (['--set', 'colour=red'], 'Unknown parameter `colour`')])
def test_cli_rejects_bad_parameters_before_running(tmp_path, args, msg):
    root = copy_project(tmp_path/'p', [])
    res = subprocess.run([str(BIN/'melanoma-report'), *args], cwd=root/'nbs', capture_output=True, text=True)
    assert res.returncode == 1 and msg in res.stderr and 'Traceback' not in res.stderr, res.stderr
    assert not (root/'runs').exists()

FAKE_QUARTO = """#!/usr/bin/env bash
echo "$@" >> "$QUARTO_LOG"
if [ "$2" = "--to" ] && [ "$3" = "html" ]; then mkdir -p _site && echo '<html>quarto site</html>' > _site/index.html
else out="${@: -1}"; printf '%%PDF-1.7 fake' > "$out"; fi
"""

def test_quarto_is_used_when_on_path(run, tmp_path, monkeypatch):
    "With `quarto` on PATH the renderer hands the same staged notebooks to Quarto (a stand-in here: Quarto cannot be installed offline)."
    r, root = run
    r2 = shutil.copytree(r, tmp_path/'r2', symlinks=True)
    (tmp_path/'bin').mkdir(); q = tmp_path/'bin'/'quarto'; q.write_text(FAKE_QUARTO); q.chmod(0o755)
    monkeypatch.setenv('PATH', f"{tmp_path/'bin'}:{os.environ['PATH']}"); monkeypatch.setenv('QUARTO_LOG', str(tmp_path/'log'))
    site, pdf = render_run(r2, root)
    calls = (tmp_path/'log').read_text().splitlines()
    assert calls == ['render report.md --to typst --output report.pdf', 'render --to html'], calls
    assert (site/'index.html').read_text().strip() == '<html>quarto site</html>' and pdf.read_bytes().startswith(b'%PDF')

def test_resume_continues_a_run_and_keeps_its_results(run, syn, tmp_path):
    r, root = run
    r2 = shutil.copytree(r, root/'runs'/'t2', symlinks=True)
    (r2/'results'/'kept.txt').write_text('finished earlier')
    again = run_report('smoke', data_path=str(syn), name='t2', root=root, resume=True, render=False, only=r'^00_')
    assert again == r2 and (r2/'results'/'kept.txt').read_text() == 'finished earlier'
    prov, before = json.loads((r2/'provenance.json').read_text()), json.loads((r/'provenance.json').read_text())
    assert prov['resumes'][-1]['command']['resume'] and [n['notebook'] for n in prov['resumes'][-1]['notebooks']] == ['00_data.ipynb']
    # the run's record keeps every notebook it ran; the resumed one is updated, the others are as they were
    assert [n['notebook'] for n in prov['notebooks']] == [n['notebook'] for n in before['notebooks']]
    assert [n for n in prov['notebooks'] if n['notebook'] != '00_data.ipynb'] == [n for n in before['notebooks'] if n['notebook'] != '00_data.ipynb']
    assert prov['command'] == before['command'] and all(n['status'] == 'ok' for n in prov['notebooks'])
