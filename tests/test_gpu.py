"""The GPU run's tooling (nbs/92_gpu.ipynb, tools/gpu-run) on the CPU: packing and unpacking within the device's
limits, the preflight's budget check, and (with MELANOMA_SLOW=1) tools/gpu-run end to end on a fresh clone with the
smoke profile, the project installed with --no-deps into a separate folder, as on the GPU machine.
"""
import json, os, shutil, subprocess, sys, tarfile, time
from pathlib import Path

import pytest, torch
from safetensors.torch import save_file, load_file

import melanoma_nbdev.gpu as gpu
from melanoma_nbdev.gpu import pack_run, unpack_run, MiB

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def fake_run(root: Path, n_folds=5, mib=0.5) -> Path:
    "A run folder shaped like a real one: a main configuration with `n_folds` models, another configuration, notebooks, results."
    run = root/'runs'/'fake'
    for cfg in ('tf_efficientnet_lite0_ce', 'tf_efficientnet_lite0_focal'):
        for k in range(n_folds):
            d = run/'kfold'/cfg/f'fold{k}'; d.mkdir(parents=True)
            save_file({'w': torch.randn(int(mib*MiB/4)), 'bn.num_batches_tracked': torch.tensor(7)}, str(d/'model.safetensors'))
            (d/'config.json').write_text(json.dumps(dict(fold=k))); (d/'oof.csv').write_text('image_id,y\nA,1\n'); (d/'done.json').write_text('{"done": true}')
            (d/'.lock').write_text('')
    (run/'notebooks').mkdir(); (run/'notebooks'/'05_kfold.ipynb').write_bytes(os.urandom(300_000))
    (run/'results').mkdir(); (run/'results'/'kfold_metrics.csv').write_text('a,b\n1,2\n')
    (run/'provenance.json').write_text('{}')
    (run/'site').mkdir(); (run/'site'/'index.html').write_text('x')
    return run


def test_pack_unpack_within_limits(tmp_path):
    run = fake_run(tmp_path)
    fs = pack_run(run, tmp_path/'out', max_files=8, max_bytes=1*MiB)
    assert len(fs) <= 8 and all(f.stat().st_size <= 1*MiB for f in fs)
    assert sorted(f.name for f in fs if f.suffix == '.safetensors') == [f'model-tf_efficientnet_lite0_ce-fold{k}.fp16.safetensors' for k in range(5)]
    assert all(f.stat().st_size < 0.3*MiB for f in fs if f.suffix == '.safetensors')  # fp16: half of the 0.5 MiB float32 models
    back = unpack_run(tmp_path/'out', tmp_path/'local')
    for k in range(5):
        a, b = (load_file(str(r/'kfold'/'tf_efficientnet_lite0_ce'/f'fold{k}'/'model.safetensors')) for r in (run, back))
        assert b['w'].dtype == torch.float32 and torch.allclose(a['w'], b['w'], atol=1e-2) and b['bn.num_batches_tracked'].item() == 7
        assert not (back/'kfold'/'tf_efficientnet_lite0_focal'/f'fold{k}'/'model.safetensors').exists()
        assert (back/'kfold'/'tf_efficientnet_lite0_focal'/f'fold{k}'/'oof.csv').read_text() == 'image_id,y\nA,1\n'
    assert (back/'notebooks'/'05_kfold.ipynb').read_bytes() == (run/'notebooks'/'05_kfold.ipynb').read_bytes()
    assert not (back/'site').exists() and not list(back.rglob('.lock'))
    man = json.loads((back/'packed.json').read_text())
    assert len(man['dropped_models']) == 5 and man['main'] == 'tf_efficientnet_lite0_ce'


def test_pack_refuses_what_does_not_fit(tmp_path):
    run = fake_run(tmp_path, n_folds=5, mib=0.5)
    with pytest.raises(ValueError, match='do not fit'): pack_run(run, tmp_path/'o1', max_files=5)
    with pytest.raises(ValueError, match='over'): pack_run(run, tmp_path/'o2', max_bytes=100_000)  # a model over the file limit


def test_unpack_refuses_unsafe_archive(tmp_path):
    (tmp_path/'evil').mkdir(); (tmp_path/'x.txt').write_text('x')
    with tarfile.open(tmp_path/'evil'/'run.tar.gz', 'w:gz') as t: t.add(tmp_path/'x.txt', arcname='../escape.txt')
    with pytest.raises(ValueError, match='unsafe'): unpack_run(tmp_path/'evil', tmp_path/'runs')
    assert not (tmp_path/'escape.txt').exists()


def fake_rates(train, infer, predict):
    return lambda arch, img_size, bs, device, aug, n: dict(arch=arch, img_size=img_size, bs=bs, device='fake', train_img_s=train, infer_img_s=infer,
                                                           predict_img_s=predict, gpu_busy_pct=None, busy_samples=0)


def bench(tmp_path, **kw):
    "`melanoma-benchmark --profile full --device cpu --out b.json` with `kw` as further options."
    return gpu.melanoma_benchmark(profile='full', device='cpu', out=str(tmp_path/'b.json'), **kw)


def test_preflight_fits_at_target_rates(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(gpu, 'measure_throughput', fake_rates(5000, 15000, 10000))
    bench(tmp_path, step='1', budget_s=540)
    out = capsys.readouterr().out
    assert '1,312,000 training images' in out and 'predicted 534 s' in out
    pf = json.loads((tmp_path/'b.json').read_text())['preflight']
    assert pf['fits'] and pf['max_epochs_fitting'] == 4 and pf['train_images'] == 1_312_000  # 5 epochs: 577 s
    prov = json.loads((tmp_path/'b.json').read_text())['provenance']  # the numbers say where and when they were measured
    assert prov['what'] == 'melanoma-benchmark --profile full --step 1' and prov['git_commit'] and prov['date_utc'] and prov['hardware']['cpu_cores'], prov


def test_preflight_stops_when_over_budget(monkeypatch, tmp_path):
    monkeypatch.setattr(gpu, 'measure_throughput', fake_rates(3000, 9000, 6000))  # 740 s at 4 epochs, 597 s at 2, 525 s at 1
    with pytest.raises(SystemExit, match=r'predicted to take 740 s, over the budget of 540 s: nothing was trained\. Fix: --set epochs=1 '):
        bench(tmp_path, step='1', budget_s=540)
    monkeypatch.setattr(gpu, 'measure_throughput', fake_rates(1000, 3000, 2000))
    with pytest.raises(SystemExit, match='even one epoch does not fit'): bench(tmp_path, step='1', budget_s=540)
    with pytest.raises(SystemExit, match='Unknown step'): bench(tmp_path, step='7')


def test_gpu_run_usage_errors():
    r = subprocess.run([str(ROOT/'tools'/'gpu-run'), 'run', '3', '--name', 'x'], capture_output=True, text=True)
    assert r.returncode == 2 and 'STEP must be 1 or 2' in r.stderr
    r = subprocess.run([str(ROOT/'tools'/'gpu-run'), 'run', '1'], capture_output=True, text=True)
    assert r.returncode == 2 and 'needs --name' in r.stderr


def gpu_clone(tmp_path: Path) -> Path:
    "A fresh clone of this project with what a GPU call carries: synthetic HAM10000 in data/ham10000 and lite0's weights in data/weights."
    from melanoma_nbdev.data import make_synthetic
    from melanoma_nbdev.models import find_weights
    clone = tmp_path/'clone'
    subprocess.run(['git', 'clone', '-q', str(ROOT), str(clone)], check=True)
    make_synthetic(clone/'data'/'ham10000', n_lesions=140)
    (clone/'data'/'weights').mkdir(); shutil.copy(find_weights('tf_efficientnet_lite0'), clone/'data'/'weights')
    return clone


@pytest.mark.skipif(not os.environ.get('MELANOMA_SLOW'), reason='end to end (minutes on 2 cores): set MELANOMA_SLOW=1')
def test_gpu_run_end_to_end_smoke(tmp_path):
    "tools/gpu-run step 1 on a fresh clone: project installed --no-deps into its own folder, dependencies from this venv's site-packages."
    import site
    clone = gpu_clone(tmp_path)
    env = {k: v for k, v in os.environ.items() if k not in ('PYTHONPATH', 'MELANOMA_DATA', 'MELANOMA_WEIGHTS', 'MELANOMA_SETTINGS')}
    env.update(PYTHONPATH=site.getsitepackages()[0], OMP_NUM_THREADS='1', PYTHON=getattr(sys, '_base_executable', sys.executable))  # the base interpreter: no editable install of the project
    t0 = time.time()
    r = subprocess.run([str(clone/'tools'/'gpu-run'), 'run', '1', '--name', 'e2e', '--profile', 'smoke', '--set', 'device=cpu',
                        '--budget-s', '100000', '--bench-batches', '2', '--site', str(tmp_path/'site'), '--out', str(tmp_path/'out')],
                       cwd=clone, env=env, capture_output=True, text=True, timeout=3000)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert 'melanoma_nbdev from ' + str(tmp_path/'site'/'project') in r.stdout
    fs = list((tmp_path/'out').iterdir())
    assert 1 <= len(fs) <= 8 and all(f.stat().st_size <= 16*MiB for f in fs)
    assert len([f for f in fs if f.suffix == '.safetensors']) == 2  # smoke: 2 folds of the main configuration
    back = unpack_run(tmp_path/'out', tmp_path/'runs')
    assert (back/'notebooks'/'05_kfold.ipynb').exists() and (back/'gpu'/'benchmark-step1.json').exists()
    assert json.loads((back/'gpu'/'step-1.json').read_text())['status'] == 0
    from melanoma_nbdev.kfold import FoldEnsemble
    assert len(FoldEnsemble(back/'kfold'/'tf_efficientnet_lite0_ce').models) == 2
    print(f'gpu-run end to end: {time.time() - t0:.0f} s')
    # then, as after a GPU window: the run unpacked into another checkout, its CPU chapters resumed there, published and shown
    here = tmp_path/'here'
    subprocess.run(['git', 'clone', '-q', str(ROOT), str(here)], check=True)
    shutil.copytree(clone/'data'/'ham10000', here/'data'/'ham10000')
    from melanoma_nbdev.data import make_synthetic_test
    test_set = make_synthetic_test(tmp_path/'isic_test', 70)
    run = unpack_run(tmp_path/'out', here/'runs')
    env_here = {k: v for k, v in os.environ.items() if k not in ('MELANOMA_DATA', 'MELANOMA_TEST_DATA', 'MELANOMA_SETTINGS')} | dict(OMP_NUM_THREADS='1')
    r = subprocess.run([str(BIN/'melanoma-report'), '--profile', 'smoke', '--set', 'device=cpu', '--name', 'e2e', '--resume', '--only', '^(06|09)_',
                        '--test-data-path', str(test_set)], cwd=here, env=env_here, capture_output=True, text=True, timeout=3000)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    prov = json.loads((run/'provenance.json').read_text())
    assert [n['notebook'] for n in prov['notebooks']] == ['00_data.ipynb', '05_kfold.ipynb', '06_error_analysis.ipynb', '09_locked_test.ipynb']
    assert {n['notebook']: n['git_commit'] for n in prov['notebooks']}['06_error_analysis.ipynb'] and len(prov['resumes']) == 1
    from melanoma_nbdev.publish import publish_run, check_published
    dest = publish_run(run, check=False, root=here)  # a smoke run: only with check=False
    assert check_published(dest) == [] and (dest/'results'/'risk_rule.json').exists() and (dest/'results'/'locked_test.json').exists()
    r = subprocess.run(['make', 'show'], cwd=here, env=env_here, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0 and (dest/'report.pdf').exists() and (dest/'site'/'index.html').exists(), r.stdout[-2000:] + r.stderr[-2000:]
    assert '/srv' not in (dest/'site'/'index.html').read_text() and str(clone) not in (dest/'site'/'06_error_analysis.html').read_text()
    print(f'... unpacked, resumed, published and shown: {time.time() - t0:.0f} s')


def part_of_run(root: Path, name: str, chapters: dict, params: dict, where: str) -> Path:
    "A run folder holding `chapters` (notebook -> status) as made on machine `where`, with one result file per chapter."
    run = root/name; (run/'notebooks').mkdir(parents=True); (run/'results').mkdir()
    for nb, status in chapters.items():
        (run/'notebooks'/nb).write_text(f'{nb} {status} on {where}'); (run/'results'/f'{nb[:2]}.json').write_text(f'"{where}"')
    (run/'provenance.json').write_text(json.dumps(dict(profile='full', parameters=params, git_commit='c-' + where, date_utc=f'2026-12-05T0{len(where)}:00:00', run_dir=f'/{where}/runs/{name}',
                                                       hardware={'gpu': where}, notebooks=[dict(notebook=nb, status=s, machine=where) for nb, s in chapters.items()])))
    return run


def test_unpack_merges_a_later_step_into_the_run(tmp_path):
    "A GPU step unpacked into a run that already holds other chapters (CPU ones, an earlier step): nothing local is lost."
    params = dict(epochs=4, folds=5, img_size=224)
    local = part_of_run(tmp_path/'runs', 'full-h200', {'00_data.ipynb': 'ok', '05_kfold.ipynb': 'ok', '06_error_analysis.ipynb': 'ok'}, params, 'cpu')
    gpu_part = part_of_run(tmp_path/'gpu'/'runs', 'full-h200', {'02_augmentation.ipynb': 'ok', '04_architectures.ipynb': 'ok', '06_error_analysis.ipynb': 'failed'}, params, 'h200')
    pack_run(gpu_part, tmp_path/'out')
    run = unpack_run(tmp_path/'out', tmp_path/'runs')
    prov = json.loads((run/'provenance.json').read_text())
    assert [(n['notebook'], n['status'], n['machine']) for n in prov['notebooks']] == [
        ('00_data.ipynb', 'ok', 'cpu'), ('02_augmentation.ipynb', 'ok', 'h200'), ('04_architectures.ipynb', 'ok', 'h200'), ('05_kfold.ipynb', 'ok', 'cpu'), ('06_error_analysis.ipynb', 'ok', 'cpu')]
    assert (run/'notebooks'/'06_error_analysis.ipynb').read_text() == '06_error_analysis.ipynb ok on cpu'  # a failed chapter never replaces a finished one
    assert (run/'notebooks'/'02_augmentation.ipynb').read_text() == '02_augmentation.ipynb ok on h200' and (run/'results'/'00.json').read_text() == '"cpu"'
    assert [a['run_dir'] for a in prov['resumes']] == ['/h200/runs/full-h200'] and prov['git_commit'] == 'c-cpu'
    assert unpack_run(tmp_path/'out', tmp_path/'runs') == run and len(json.loads((run/'provenance.json').read_text())['resumes']) == 1  # twice: the same
    other = part_of_run(tmp_path/'gpu2'/'runs', 'full-h200', {'02_augmentation.ipynb': 'ok'}, dict(params, epochs=3), 'h200')
    pack_run(other, tmp_path/'out2'); before = tree_bytes(run)
    with pytest.raises(ValueError, match='not the same run'): unpack_run(tmp_path/'out2', tmp_path/'runs')
    assert tree_bytes(run) == before and [p.name for p in (tmp_path/'runs').iterdir()] == ['full-h200']
    (tmp_path/'runs'/'x').mkdir(); pack_run(part_of_run(tmp_path/'gpu3'/'runs', 'x', {'02_augmentation.ipynb': 'ok'}, params, 'h200'), tmp_path/'out3')
    with pytest.raises(ValueError, match=r'exists but is not a readable run folder \(no provenance.json\): not unpacked'): unpack_run(tmp_path/'out3', tmp_path/'runs')


def tree_bytes(d: Path) -> dict:
    return {str(p.relative_to(d)): p.read_bytes() for p in sorted(d.rglob('*')) if p.is_file()}


@pytest.mark.skipif(not os.environ.get('MELANOMA_SLOW'), reason='end to end (minutes on 2 cores): set MELANOMA_SLOW=1')
def test_gpu_run_stops_at_the_budget_and_packs_what_finished(tmp_path):
    "A step that would outlast its command is interrupted in time to pack what finished; the same step again continues it."
    clone = gpu_clone(tmp_path)
    env = {k: v for k, v in os.environ.items() if k not in ('MELANOMA_DATA', 'MELANOMA_WEIGHTS', 'MELANOMA_SETTINGS')} | dict(OMP_NUM_THREADS='1', PYTHONPATH=str(clone))
    cmd = [str(clone/'tools'/'gpu-run'), 'run', '1', '--name', 'cut', '--profile', 'smoke', '--set', 'device=cpu', '--no-install', '--budget-s', '100000', '--bench-batches', '2']
    r = subprocess.run(cmd + ['--stop-after', '60', '--out', str(tmp_path/'out1')], cwd=clone, env=env | dict(PYTHON=sys.executable), capture_output=True, text=True, timeout=1200)
    assert r.returncode == 124 and '== report stopped after 60 s, at the budget: packing what it finished' in r.stdout, r.stdout[-3000:] + r.stderr[-3000:]
    back = unpack_run(tmp_path/'out1', tmp_path/'here')
    st = {n['notebook']: n['status'] for n in json.loads((back/'provenance.json').read_text())['notebooks']}
    assert st == {'00_data.ipynb': 'ok', '05_kfold.ipynb': 'interrupted'}, st
    done = {p: p.stat().st_mtime_ns for p in (clone/'runs'/'cut').glob('kfold/*/fold*/done.json')}
    r = subprocess.run(cmd + ['--out', str(tmp_path/'out2')], cwd=clone, env=env | dict(PYTHON=sys.executable), capture_output=True, text=True, timeout=3000)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    st = {n['notebook']: n['status'] for n in json.loads((clone/'runs'/'cut'/'provenance.json').read_text())['notebooks']}
    assert st == {'00_data.ipynb': 'ok', '05_kfold.ipynb': 'ok'}, st
    assert all(p.stat().st_mtime_ns == t for p, t in done.items())  # folds finished before the stop were not trained again
    print(f'folds kept across the stop: {len(done)}')


def test_cpu_preflight_two_budgets(monkeypatch, tmp_path, capsys):
    "--step cpu: the main configuration's folds against 90 min and the whole run against 4 h; over either, nothing is trained."
    monkeypatch.setattr(gpu, 'measure_throughput', fake_rates(60, 500, 400))  # about the machine: both fit
    gpu.melanoma_benchmark(profile='cpu', device='cpu', step='cpu', out=str(tmp_path/'b.json'))
    out, pf = capsys.readouterr().out, json.loads((tmp_path/'b.json').read_text())['preflight']
    assert pf['main_fits'] and pf['run_fits'] and pf['main_predicted_s'] == round(240_000/60 + 60_090/500 + 60_090/400 + 15, 1)
    assert 'main configuration, every outer fold: predicted 71 min against a budget of 90 min: fits' in out, out
    monkeypatch.setattr(gpu, 'measure_throughput', fake_rates(40, 300, 250))  # a slower machine: the main folds alone take 1.8 h
    with pytest.raises(SystemExit, match=r"main configuration's folds \(budget 90 min\).*nothing was trained"):
        gpu.melanoma_benchmark(profile='cpu', device='cpu', step='cpu', out=str(tmp_path/'c.json'))
    assert not json.loads((tmp_path/'c.json').read_text())['preflight']['main_fits']
