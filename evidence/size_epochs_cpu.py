"""CPU experiment behind the `cpu` profile's image size and epochs (issue 30, section 2): the main configuration
(tf_efficientnet_lite0, plain cross-entropy, the profile's lr, lr_mult, batch size and augmentation) trained on the
*true* inner split of the run's 5-fold split (`inner_split` of outer folds 1-4: 6,408 training / 1,603 validation
images, the split chapter 05's variants use; outer fold 0 never used) at 128 px x 5 epochs (the profile), 128 px x 8
epochs and 160 px x 5 epochs. Scored on the inner-validation lesions with paired lesion-bootstrap CIs against the
profile. Writes evidence/size_epochs_cpu.json with the table, the training times and full provenance.

    cd <project> && OMP_NUM_THREADS=2 .venv/bin/python evidence/size_epochs_cpu.py [out_folder]

SIZE_EPOCHS_CONFIGS=128px_5ep,128px_8ep limits the run to those configurations (the json then holds only them).

A kept out_folder resumes finished configurations; a fold folder of the profile's own configuration (chapter 05's
`kfold/inner/tf_efficientnet_lite0_ce/fold0` of a cpu run) copied to <out>/128px_5ep/fold0 is read back, not trained.
Its numbers are a selection experiment on the inner split, not results of the report.
"""
import os, sys, time, json, tempfile
from pathlib import Path
import torch, pandas as pd
from melanoma_nbdev.profiles import load_profile, provenance, save_json, project_root
from melanoma_nbdev.data import load_dataset, split, decode_images
from melanoma_nbdev.kfold import inner_split, train_fold
from melanoma_nbdev.architectures import paired_vs, fold_metrics

CONFIGS = {'128px_5ep': dict(img_size=128, epochs=5), '128px_8ep': dict(img_size=128, epochs=8), '160px_5ep': dict(img_size=160, epochs=5)}
REF = '128px_5ep'  # the profile's own values
if os.environ.get('SIZE_EPOCHS_CONFIGS'):  # a subset, e.g. SIZE_EPOCHS_CONFIGS=128px_5ep,128px_8ep (the reference is always kept)
    CONFIGS = {k: v for k, v in CONFIGS.items() if k == REF or k in os.environ['SIZE_EPOCHS_CONFIGS'].split(',')}
out = Path(sys.argv[1] if len(sys.argv) > 1 else os.environ.get('SIZE_EPOCHS_OUT') or tempfile.mkdtemp(prefix='size_epochs_'))
P0 = load_profile('cpu')
t0 = time.time()
df = load_dataset(None, max_pixels=P0.max_pixels, check=False)
inner = inner_split(split(df, P0), holdout=0, seed=P0.seed)  # the run's own folds: fold 0 of the real split stays out
images = decode_images(inner.path)
preds, rows = {}, []
for name, o in CONFIGS.items():
    P = load_profile('cpu', **o)
    t1 = time.time()
    preds[name] = oof = train_fold(inner, 0, P, out/name, tta=False)
    cfg = json.loads((out/name/'fold0'/'config.json').read_text())
    rows.append(dict(config=name, img_size=P.img_size, epochs=P.epochs, train_seconds=cfg['train_seconds'], wall_seconds=round(time.time() - t1, 1),
                     n_train=cfg['n_train'], n_valid=cfg['n_valid'], last_epoch_valid_loss_improved=bool(cfg['history'][-1]['valid_loss'] < cfg['history'][-2]['valid_loss']),
                     **fold_metrics(oof)))
    print(name, {k: round(v, 4) if isinstance(v, float) else v for k, v in rows[-1].items()}, flush=True)
tab = pd.DataFrame(rows)
pv = paired_vs(preds, REF, n=1000, seed=P0.seed).reset_index()
wall = time.time() - t0
cols = ['config', 'img_size', 'epochs', 'train_seconds', 'n_train', 'n_valid', 'accuracy', 'balanced_accuracy', 'macro_auc', 'mel_auc', 'mel_sens_at_80_spec', 'last_epoch_valid_loss_improved']
print(tab[cols].round(4).to_string(index=False)); print(pv.round(4).to_string(index=False))
prov = provenance(P0, df.attrs['path'], what='selection experiment on the inner split (not a result of the report): image size and epochs of the cpu profile',
                  split=f"inner split of outer folds 1-4 of the run's 5-fold split (inner training {rows[0]['n_train']:,} / inner validation {rows[0]['n_valid']:,} images, lesion-grouped, class-stratified); outer fold 0 not used",
                  torch_threads=torch.get_num_threads(), wall_seconds=round(wall, 1), script='evidence/size_epochs_cpu.py', configs=CONFIGS,
                  table=tab[cols].to_dict('records'), paired=dict(reference=f'{REF} (the cpu profile)', level='lesion', n_boot=1000, rows=pv.to_dict('records')))
save_json(prov, (project_root() or Path.cwd())/'evidence'/'size_epochs_cpu.json')
print(f'wall {wall/60:.1f} min')
