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


def fake_rates(train, infer):
    return lambda arch, img_size, bs, device, aug, n: dict(arch=arch, img_size=img_size, bs=bs, device='fake', train_img_s=train, infer_img_s=infer,
                                                           gpu_busy_pct=None, busy_samples=0)


def bench(tmp_path, **kw):
    "`melanoma-benchmark --profile full --device cpu --out b.json` with `kw` as further options."
    return gpu.melanoma_benchmark(profile='full', device='cpu', out=str(tmp_path/'b.json'), **kw)


def test_preflight_fits_at_target_rates(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(gpu, 'measure_throughput', fake_rates(5000, 15000))
    bench(tmp_path, step='1', budget_s=540)
    out = capsys.readouterr().out
    assert '1,312,000 training images' in out and 'predicted 524 s' in out
    pf = json.loads((tmp_path/'b.json').read_text())['preflight']
    assert pf['fits'] and pf['max_epochs_fitting'] == 4 and pf['train_images'] == 1_312_000  # 5 epochs: 567 s


def test_preflight_stops_when_over_budget(monkeypatch, tmp_path):
    monkeypatch.setattr(gpu, 'measure_throughput', fake_rates(3000, 9000))  # 724 s at 4 epochs, 580 s at 2, 508 s at 1
    with pytest.raises(SystemExit, match=r'predicted to take 724 s, over the budget of 540 s: nothing was trained\. Fix: --set epochs=1 '):
        bench(tmp_path, step='1', budget_s=540)
    monkeypatch.setattr(gpu, 'measure_throughput', fake_rates(1000, 3000))
    with pytest.raises(SystemExit, match='even one epoch does not fit'): bench(tmp_path, step='1', budget_s=540)
    with pytest.raises(SystemExit, match='Unknown step'): bench(tmp_path, step='7')


def test_gpu_run_usage_errors():
    r = subprocess.run([str(ROOT/'tools'/'gpu-run'), 'run', '3', '--name', 'x'], capture_output=True, text=True)
    assert r.returncode == 2 and 'STEP must be 1 or 2' in r.stderr
    r = subprocess.run([str(ROOT/'tools'/'gpu-run'), 'run', '1'], capture_output=True, text=True)
    assert r.returncode == 2 and 'needs --name' in r.stderr


@pytest.mark.skipif(not os.environ.get('MELANOMA_SLOW'), reason='end to end (minutes on 2 cores): set MELANOMA_SLOW=1')
def test_gpu_run_end_to_end_smoke(tmp_path):
    "tools/gpu-run step 1 on a fresh clone: project installed --no-deps into its own folder, dependencies from this venv's site-packages."
    import site
    clone = tmp_path/'clone'
    subprocess.run(['git', 'clone', '-q', str(ROOT), str(clone)], check=True)
    from melanoma_nbdev.data import make_synthetic
    make_synthetic(clone/'data'/'ham10000', n_lesions=140)
    (clone/'data'/'weights').mkdir()
    from melanoma_nbdev.models import find_weights
    shutil.copy(find_weights('tf_efficientnet_lite0'), clone/'data'/'weights')
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
