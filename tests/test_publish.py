"""The committed reference report (issue 11, section 4): `melanoma-publish` copies a finished full run into `report/`,
`make show` renders it with no execution, and the commands default to its fold models. Tested on a fabricated run
with a tiny trained ensemble; the real report/, once published, is checked file by file against its PUBLISHED.json."""
import importlib, inspect, json, re, shutil, subprocess, sys, time, tomllib
from pathlib import Path
import pytest, torch
from safetensors.torch import load_file
from melanoma_nbdev import scoring, publish
from melanoma_nbdev.kfold import ensemble_predict
from melanoma_nbdev.profiles import project_root, save_json, has_models, reduced, REFERENCE
from melanoma_nbdev.publish import publish_run, check_published, PUBLISHED
from melanoma_nbdev.render import render_run
from melanoma_nbdev.pipeline import RunError
from test_render import make_run, check_render, pdf_pages, needs_poppler

ROOT = project_root(Path(__file__).parent)
BIN = Path(sys.executable).parent
CONF = 'tf_efficientnet_lite0_ce'


def full_run(base: Path, tiny_ensemble) -> tuple:
    "A project copy holding a finished run made to look like a full one: two chapters, results, and the tiny ensemble as its main configuration."
    root, run = make_run(base)
    for n in ('01_eda.ipynb', '02_augmentation.ipynb'): (root/'nbs'/n).write_text('{}')  # chapters of the project that this run lacks
    shutil.copytree(tiny_ensemble[0], run/'kfold'/CONF)
    (run/'logs').mkdir(); (run/'logs'/'05_kfold.kernel.log').write_text(f'kernel noise from {run}\n')
    (run/'gpu').mkdir(); save_json({'step': '1', 'status': 0, 'total_seconds': 512}, run/'gpu'/'step-1.json')
    prov = json.loads((run/'provenance.json').read_text())
    h200 = 'NVIDIA H200 GPU, 16 CPU cores (x86_64), 125.8 GiB memory'
    prov.update(profile='full', smoke=False, parameters=dict(n_images=0, img_size=224, bs=128, epochs=4, folds=5, arch='tf_efficientnet_lite0'),
                run_dir='/srv/h200/runs/full-h200', project='/srv/h200',
                notebooks=[dict(notebook='00_data.ipynb', status='ok', seconds=30, machine=h200, git_commit='0123456789ab', finished_utc='2026-12-05T01:00:00+00:00'),
                           dict(notebook='05_kfold.ipynb', status='ok', seconds=480, machine=h200, git_commit='0123456789ab', finished_utc='2026-12-05T01:08:00+00:00')])
    save_json(prov, run/'provenance.json')
    return root, run


@pytest.fixture(scope='module')
def published(tmp_path_factory, tiny_ensemble):
    root, run = full_run(tmp_path_factory.mktemp('publish'), tiny_ensemble)
    return root, run, publish_run(run, check=False, root=root)


def test_publish_copies_what_the_report_needs(published):
    root, run, dest = published
    assert dest == root/REFERENCE
    files = sorted(str(p.relative_to(dest)) for p in dest.rglob('*') if p.is_file())
    assert files == sorted(['PUBLISHED.json', 'provenance.json', 'notebooks/00_data.ipynb', 'notebooks/05_kfold.ipynb', 'gpu/step-1.json',
                            *[str(p.relative_to(run)) for p in (run/'results').rglob('*') if p.is_file()],
                            *[f'kfold/{CONF}/fold{k}/{f}' for k in (0, 1) for f in ('config.json', 'done.json', 'model.safetensors')]])
    assert not any('logs' in f for f in files)  # kernel logs stay with the run
    rec = json.loads((dest/PUBLISHED).read_text())
    assert rec['run'] == run.name and rec['profile'] == 'full' and rec['models'] == dict(folder=f'kfold/{CONF}', dtype='float16', exact=True, note=rec['models']['note'])
    assert check_published(dest) == [] and has_models(dest)
    for k in (0, 1):
        a, b = load_file(str(run/'kfold'/CONF/f'fold{k}'/'model.safetensors')), load_file(str(dest/'kfold'/CONF/f'fold{k}'/'model.safetensors'))
        assert a.keys() == b.keys()
        for n in a:
            assert b[n].dtype == (torch.float16 if a[n].is_floating_point() else a[n].dtype), n
            assert torch.equal(a[n].float(), b[n].float()), n  # the run's models hold float16 values (round_to_fp16): the copy is exact


def test_published_models_predict_like_the_originals(published, tiny_ensemble):
    root, run, dest = published
    paths = list(tiny_ensemble[1].path[:24])
    orig, pub = scoring.load_ensemble(run/'kfold'/CONF), scoring.load_ensemble(scoring.model_folder(dest))
    p0, p1 = (torch.as_tensor(ensemble_predict(e, paths).to_numpy()) for e in (orig, pub))
    diff = float((p0 - p1).abs().max())
    print(f'largest difference of a class probability, published fp16 copies vs the run models (equal by design), {len(paths)} images: {diff:.2e}')
    assert diff == 0  # the same weights: the run rounded them to float16 values before predicting


def test_commands_default_to_the_reference_models(published, monkeypatch):
    root, run, dest = published
    monkeypatch.setattr(scoring, 'project_root', lambda: root)
    assert scoring.model_folder() == dest/'kfold'/CONF  # before runs/latest (which the fabricated run's project does not even have)
    from melanoma_nbdev.app import default_run
    assert default_run(root) == dest


@needs_poppler
def test_show_renders_the_published_report_for_readers(published):
    root, run, dest = published
    t0 = time.time(); site, pdf = render_run(dest, root); secs = time.time() - t0
    print(f'rendered the published report in {secs:.1f} s')
    check_render(dest, root, site, pdf, ['00_data.ipynb', '05_kfold.ipynb'])
    text = '\n'.join(pdf_pages(pdf))
    assert 'SMOKE RUN' not in text and 'Where the numbers on this page come from' in text
    assert re.search(r'Every number: the full run of 2026-12-04, profile full, commit 0123456789ab, run on NVIDIA H200 GPU', text)
    page = (site/'05_kfold.html').read_text()
    assert 'Where the numbers on this page come from' in page and 'executed on 2026-12-05 on NVIDIA H200 GPU, 16 CPU cores' in page
    index = (site/'index.html').read_text(); words = ' '.join(re.sub(r'<[^>]+>', ' ', index).split())
    words = re.sub(r' ([,;)])', r'\1', words)  # the front page links its chapter numbers (issue 32): '[00](00_data.html), [05](...)'
    assert 'NVIDIA H200 GPU, 16 CPU cores (x86_64), 125.8 GiB memory (chapters 00, 05)' in words
    assert 'not in this run: 01_eda.ipynb, 02_augmentation.ipynb' in words
    assert '/srv/h200' not in index + page + text  # the GPU machine's paths are scrubbed too
    assert check_published(dest) == []  # rendering added only what is ignored (book/, site/, report.pdf)


def test_show_needs_no_torch(published, tmp_path):
    "make show's small install has no torch, fastai, timm or scikit-learn: `melanoma-report --render` must not import them."
    root, run, dest = published
    script = tmp_path/'melanoma-report'  # run as a file: fastcore's call_parse reads the command line there
    script.write_text("import sys\nfor m in ('torch', 'torchvision', 'fastai', 'timm', 'sklearn', 'pytorch_grad_cam'): sys.modules[m] = None  # any import of them fails\n"
                      "from melanoma_nbdev.pipeline import melanoma_report\nsys.exit(melanoma_report())\n")
    r = subprocess.run([sys.executable, str(script), '--render', 'report'], cwd=root, capture_output=True, text=True)
    assert r.returncode == 0 and 'rendered report/site/index.html and report/report.pdf' in r.stdout, r.stdout[-1000:] + r.stderr[-2000:]


def test_publish_refuses_and_changes_nothing(published, tmp_path, capsys):
    root, run, dest = published
    before = {p: p.stat().st_mtime_ns for p in dest.rglob('*')}
    with pytest.raises(RunError, match=r'already holds a published report \(of run fake\)\. Nothing was changed\. Fix: --force'): publish_run(run, check=False, root=root)
    with pytest.raises(RunError, match=r"cannot be the reference report: it lacks chapter\(s\) 01_eda\.ipynb\. Nothing was changed"): publish_run(run, root=root, force=True)
    # the CLI: a smoke run is refused in one line
    prov = json.loads((run/'provenance.json').read_text())
    smoke = tmp_path/'smoke'; shutil.copytree(run, smoke); save_json({**prov, 'profile': 'smoke', 'smoke': True}, smoke/'provenance.json')
    with pytest.raises(SystemExit) as e: publish.melanoma_publish.__wrapped__(str(smoke), str(tmp_path/'out'))
    err = capsys.readouterr().err
    assert e.value.code == 1 and err.startswith(f"error: {smoke} cannot be the reference report: it is a smoke run (profile 'smoke'): its numbers are not results") and err.count('\n') == 1
    assert not (tmp_path/'out').exists()
    assert {p: p.stat().st_mtime_ns for p in dest.rglob('*')} == before


def test_a_failed_publish_keeps_the_old_report(published, monkeypatch):
    root, run, dest = published
    before = {str(p.relative_to(dest)): p.read_bytes() for p in dest.rglob('*') if p.is_file()}
    monkeypatch.setattr(publish, 'PUBLISH_MAX_MIB', dict(file=20, total=0.01))
    with pytest.raises(RunError, match=r'is too large to commit: .* MiB \(at most 0.01\).*Nothing was changed'): publish_run(run, check=False, force=True, root=root)
    monkeypatch.undo()
    def boom(*a): raise OSError(28, 'No space left on device')
    monkeypatch.setattr(publish, '_publish_files', boom)
    with pytest.raises(OSError): publish_run(run, check=False, force=True, root=root)
    assert {str(p.relative_to(dest)): p.read_bytes() for p in dest.rglob('*') if p.is_file()} == before
    assert [p.name for p in dest.parent.iterdir() if p.name.startswith('.report.')] == []


def test_show_without_a_published_report_says_what_to_do(tmp_path):
    root = tmp_path/'proj'; root.mkdir()
    for f in ('settings.ini', 'pyproject.toml', '_quarto.yml', 'Makefile'): shutil.copy(ROOT/f, root/f)
    r = subprocess.run([str(BIN/'melanoma-report'), '--render', 'report'], cwd=root, capture_output=True, text=True)
    assert r.returncode == 1 and r.stderr.startswith('error: report holds no published report yet: the reference report is the full run') and r.stderr.count('\n') == 1
    assert not (root/'report').exists()


def test_show_installs_only_pinned_render_dependencies():
    "make show's SHOW_DEPS are pyproject's own pins: a fresh clone renders with the same packages as make test."
    deps = set(tomllib.loads((ROOT/'pyproject.toml').read_text())['project']['dependencies'])
    show = re.findall(r'"([^"]+)"', re.search(r'^SHOW_DEPS := (.*)$', (ROOT/'Makefile').read_text(), re.M)[1])
    assert show and set(show) <= deps, set(show) - deps
    assert not any(re.match(r'(torch|torchvision|fastai|timm)\b', d) for d in show)


def test_every_set_option_is_repeatable():
    "Each console script's --set keeps every value given (argparse keeps only the last one of a plain option)."
    scripts = tomllib.loads((ROOT/'pyproject.toml').read_text())['project']['scripts']
    with_set = []
    for name, target in scripts.items():
        mod, fn = target.split(':')
        p = inspect.signature(getattr(importlib.import_module(mod), fn)).parameters.get('set')
        if p is not None: with_set.append(name); assert "'append'" in str(p.annotation), f'{name}: --set is not repeatable'
    assert {'melanoma-report', 'melanoma-benchmark'} <= set(with_set)


def test_committed_report_is_intact():
    "The published reference report in this checkout: every file as published, a full run (or the CPU reference run until a GPU is lent), with fold models."
    dest = ROOT/REFERENCE
    if not (dest/PUBLISHED).exists(): pytest.skip('no run is published in report/ yet')
    assert check_published(dest) == []
    prov = json.loads((dest/'provenance.json').read_text())
    assert prov['profile'] in ('full', 'cpu') and not prov['smoke'] and not reduced(prov) and has_models(dest)
