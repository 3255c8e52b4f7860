"""Small CPU experiment behind the `full` profile's `lr_mult` (issue 11, section 1; redone for issue 30): the recipe
comparison of chapter 04 (`architectures.recipe_compare`), run once on the inner split of the run's own 5-fold split
(`selection_split`: about n_images images of whole lesions from outer folds 1-4, the split chapters 02 and 04 choose on;
outer fold 0 never used), at the `full` profile's image size, epochs and batch size, with the base learning rate found the
way the `full` profile finds it (its lr is 0: chapter 04 takes the lr_find valley of the profile's model, trained by
`train_candidate` with the profile's lr_mult). Only the number of images is smaller than the profile's whole inner split,
so that it fits a 2-core CPU. Writes evidence/recipe_cpu.json with the table and full provenance.
(Before issue 30 this script sampled n_images first and drew new folds on the sample, so its 'fold 0' was not the
run's fold 0, and it ran at 112 px, 1 + 2 epochs, a fixed lr 2e-3; a recipe_cpu.json whose `split` does not name
`selection_split` was made that way.)

    cd <project> && OMP_NUM_THREADS=2 nohup .venv/bin/python evidence/recipe_cpu.py [n_images [img_size epochs bs]] &

Its numbers are a small CPU experiment, not results of the full run.
"""
import os, sys, time, tempfile
from pathlib import Path
import torch, pandas as pd
from melanoma_nbdev.profiles import load_profile, provenance, save_json, project_root
from melanoma_nbdev.data import load_dataset, split, decode_images
from melanoma_nbdev.kfold import selection_split
from melanoma_nbdev.architectures import recipe_compare, paired_vs, train_candidate

F = load_profile('full')
n_images = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
img_size, epochs, bs = (int(a) for a in sys.argv[2:5]) if len(sys.argv) > 4 else (F.img_size, F.epochs, F.bs)
LR_MULTS = (100, 10, 1)  # fastai's default lr_mult, a moderate one, all layers equal
overrides = dict(select_images=n_images, img_size=img_size, epochs=epochs, bs=bs, device='cpu')
P = load_profile('full', **overrides)  # n_images stays the profile's (all): the split is the run's own
t0 = time.time()
df = load_dataset(None, max_pixels=P.max_pixels, check=False)
inner = selection_split(split(df, P), P)  # inner split of the real folds 1-4, then about n_images images of whole lesions
out = Path(os.environ.get('RECIPE_OUT') or tempfile.mkdtemp(prefix='recipe_cpu_'))  # a kept folder resumes finished runs
images = decode_images(inner.path)
if P.lr: LR, lr_from = P.lr, 'the profile\'s lr'
else:  # as chapter 04 finds it: the comparison's lr_find valley for the profile's model, recipe lr_mult of the profile
    found = train_candidate(inner, P, out/'lr_find', P.arch, True, lr=None, images=images, quiet=True)
    LR, lr_from = float(found['lr']), f"lr_find valley of {P.arch} on the same inner split ({found['lr_from']}), as chapter 04's comparison finds it"
print(f'base lr {LR:.3g} ({lr_from})', flush=True)
tab = recipe_compare(inner, P, out, P.arch, LR, LR_MULTS, images=images, quiet=True)
# paired lesion-bootstrap CIs of each recipe's difference from fastai's default (lr_mult 100): the same inner-validation lesions for both
preds = {f'lr_mult {m:g}': pd.read_csv(out/f'lr_mult{m:g}'/'fold0'/'oof.csv') for m in LR_MULTS}
pv = paired_vs(preds, 'lr_mult 100', n=1000, seed=P.seed).reset_index()
best = f"lr_mult {tab.loc[tab.balanced_accuracy.idxmax(), 'lr_mult']:g}"  # and every other recipe against the best one
pb = paired_vs(preds, best, n=1000, seed=P.seed).reset_index()
wall = time.time() - t0
cols = ['lr_mult', 'head_lr', 'backbone_lr', 'n_train', 'n', 'train_seconds', 'accuracy', 'balanced_accuracy', 'macro_f1', 'macro_auc', 'mel_auc', 'mel_sens_at_80_spec']
print(tab[cols].round(4).to_string(index=False))
print(pv.round(4).to_string(index=False)); print(pb.round(4).to_string(index=False))
prov = provenance(P, df.attrs['path'], what='small CPU experiment (not a result of the full run): fine_tune recipes compared on the inner split',
                  split=tab.split.iloc[0] + f' (selection_split: about {n_images:,} images of whole lesions from the inner split of the run\'s 5-fold split, inner training / inner validation about 80/20, lesion-grouped, class-stratified); outer fold 0 not used',
                  arch=P.arch, base_lr=LR, base_lr_from=lr_from, torch_threads=torch.get_num_threads(), wall_seconds=round(wall, 1),
                  train_seconds_total=round(float(tab.train_seconds.sum()), 1), script='evidence/recipe_cpu.py', table=tab[cols + ['recipe', 'lr_from', 'bs']].to_dict('records'),
                  paired=dict(reference='lr_mult 100 (fastai default)', level='lesion', n_boot=1000, rows=pv.to_dict('records')),
                  paired_best=dict(reference=f'{best} (highest balanced accuracy)', level='lesion', n_boot=1000, rows=pb.to_dict('records')))
save_json(prov, (project_root() or Path.cwd())/'evidence'/'recipe_cpu.json')
print(f'wall {wall/60:.1f} min')
