r"""The embedded study: an AMD student against the same student pre-trained as plain
VideoMAE, on the embedded moving_digits videos, in one command.

  python -m amd_jax.proj.study [--workdir runs/demo] [--size smoke|default|full] [--seeds N]
                               [--teacher DIR] [--ablation NAME] [--jobs N]
  python -m amd_jax.proj.study --make-teacher OUT [--workdir runs/teacher] [--size default]

(launch/demo.sh wraps it; its --full is --size full.) As in the paper, the
teacher is a released checkpoint, trained once and far longer than its
students: the one in amd_jax/proj/study/teacher (made by the --make-teacher
command above, see its card.json), or --teacher DIR for another release.
Stages, each skipped when its outputs exist and resumed from its last
checkpoint when it was interrupted:

  1. amd_student       AMD pre-training of the student, distilled from the teacher
  2. videomae_student  the same student as plain VideoMAE: same steps, batch, lr, data
  3. fine-tuning       both students and the same student from random weights
                       (scratch_student, the control: what pre-training adds),
                       all with one recipe; then the multi-view test
     (1–3 once per seed: a chain of stages per student and seed; --jobs chains
     run at once, each in a process of its own; the results do not depend on it)
  4. probes            a linear probe on the frozen encoder of every pre-trained
                       model, the teacher's included, and on the scratch student's
                       random initial weights (the control; amd_jax/analysis/probe.py)
  5. plots             DIR/*.png with their numbers in DIR/*.json (seed 0's runs)
  6. DIR/results.json  top-1, top-5, probe top-1, times and steps per model
                       (mean ± std over seeds); the teacher's fine-tuned top-1 is
                       its release's, measured with the same recipe and test

--make-teacher OUT pre-trains the teacher in --workdir, fine-tunes and tests it
with the protocol of every size that uses this teacher, probes it, measures its
reconstruction loss against trivial predictors and writes the release to OUT:
checkpoint/ (converted, weights only), card.json, metrics.jsonl,
reconstructions.png.

With --ablation the AMD student is pre-trained and fine-tuned once per setting
of one factor (the supplementary's Sections B–E, and two opt-in deviations: the
alignment targets' normalisation and loss); the other factors are the study's
AMD student, which is reused for the default setting, and the table goes to
DIR/ablation_NAME.json. A fine-tuning factor (--ablation labels: 2048, 256 or
64 labelled videos, the first of each motion) fine-tunes every model instead,
the teacher included, with every seed, from the study's pre-training.

Layout: DIR/seed_S/{amd_student,videomae_student}/{pretrain,finetune},
DIR/seed_S/scratch_student/finetune, DIR/ablation/NAME/seed_S/SETTING/
{pretrain,finetune}, DIR/ablation/labels/seed_S/SETTING/MODEL/finetune; each is a
training workdir (metrics.jsonl, checkpoints/,
config.json) with a stage.json written when it completes. DIR/probe.json holds
the probes.

Modules: recipe.py (sizes, the teacher's recipe, ablations and the configs of
every run), chains.py (a stage, chains of stages and their worker processes),
release.py (the teacher release: making and checking one), diagnostics.py (the
reconstruction loss split by what moving_digits' hidden tubes hold), run.py (the
study, its ablations, results and the command line behind __main__.py); teacher/
is the released teacher.
"""
