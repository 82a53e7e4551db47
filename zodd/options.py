"""What ``zodd distill --help`` says of each DistillConfig field: its heading, its help, and
the setting it needs to have any effect.

The option's type, choices and their descriptions come from the field and its registry, and a
default decided at run time is named here by where it lives, which the command line fills in
(``help_text``): a ``zodd.plan`` constant (``{NAME}``), an objective's declared default
(``{dm.default_lr}``), the network's shape by image size (``{small}``, ``{large}``: width and
depth for 8 px and for 28-32 px). The value is written once, where it is used.
"""
from __future__ import annotations

from dataclasses import dataclass

GROUPS = ("Data", "The set", "Objective", "Estimator and steps", "Network and robust updater",
          "Budget", "Parallel and devices", "Run directory")


@dataclass(frozen=True)
class Option:
    group: str
    help: str = ""
    needs: str = ""  # e.g. "--representation multi": it does nothing otherwise


ZERO_ORDER = "a zero-order --estimator"
TRAINS = "--updater robust or ce"
QUEUE = "--queue-size"

OPTIONS = {
    "dataset": Option("Data"),
    "data_dir": Option("Data", "Where data sets live (None: $ZODD_DATA, else ~/.cache/zodd)."),
    "image_size": Option("Data", "Resize every image to N x N (needed when a folder's images "
                         "differ in size)."),
    "test_fraction": Option("Data", "A folder tree without train/ and test/: the share of each "
                            "class held out as the test set (seed 0)."),
    "ipc": Option("The set", "Synthetic images per class (stored; --representation multi "
                  "decodes each into factor^2)."),
    "init": Option("The set"),
    "warm_iterations": Option("The set", "Its distribution-matching steps (default "
                              "{WARM_ITERATIONS}; their time counts against --max-seconds).",
                              "--init dm"),
    "representation": Option("The set"),
    "factor": Option("The set", "Each stored image holds factor x factor images.",
                     "--representation multi"),
    "latent": Option("The set", "Numbers a code (the learned prior's width).",
                     "--representation latent"),
    "labels": Option("The set", "onehot: one class an image, fixed; learn: one label vector "
                     "an image, learned with the images (needs an objective that reads labels: "
                     "krr, frepo, command)."),
    "label_lr": Option("The set", "The labels' step size (default: --lr's).", "--labels learn"),
    "seed": Option("The set", "The run's one root random generator: the same seed, the same "
                   "set on one machine."),
    "recipe": Option("Objective", "Start from a named method's settings; flags given here "
                     "override them."),
    "objective": Option("Objective"),
    "augment": Option("Objective", "Siamese augmentation of real and synthetic batches in the "
                      "objective."),
    "command": Option("Objective", "The program scoring candidates, e.g. 'python eval.py "
                      "{{input}}' (see README).", "--objective command"),
    "command_timeout": Option("Objective", "Seconds per call of --command.",
                              "--objective command"),
    "folds": Option("Objective", "A score's data in folds: the search's steps score on folds "
                    "1..N-1 (a --command's {{fold}}, drawn with each step's {{seed}}), fold 0 "
                    "is kept for choosing the set (--select-every)."),
    "select_every": Option("Objective", "Steps between scorings of S on fold 0 (seed 0): the "
                           "run keeps the best set seen there, not the last (0: the last; "
                           "default: {SELECT_EVERY} for prototype, trained and a --command "
                           "taking {{fold}}, else 0)."),
    "surrogate": Option("Estimator and steps", "A differentiable objective (dm, gm) whose "
                        "gradient at S guides the estimate: its direction gets its own finite "
                        "difference, the random directions span the rest (unbiased; one more "
                        "query a step).", "--estimator gaussian"),
    "estimator": Option("Estimator and steps"),
    "optimizer": Option("Estimator and steps", "Step rule for S."),
    "lr": Option("Estimator and steps", "Learning rate for S (default: the objective's, e.g. "
                 "{dm.default_lr} for dm, {gm.default_lr} for gm)."),
    "sigma": Option("Estimator and steps", "Smoothing radius (default: the objective's: "
                    "{dm.default_sigma} for dm and gm, {prototype.default_sigma} for scores).",
                    ZERO_ORDER),
    "directions": Option("Estimator and steps", "Directions per estimate (default: the "
                         "objective's: {dm.default_directions} for dm and gm, "
                         "{prototype.default_directions} for scores).", ZERO_ORDER),
    "lowres": Option("Estimator and steps", "Directions drawn at 1/N resolution and upsampled "
                     "(default: 2 where one estimate covers over {AUTO_LOWRES_ABOVE} values, "
                     "e.g. Fashion-MNIST IPC 10; else 1).", ZERO_ORDER),
    "blockwise": Option("Estimator and steps", "One finite difference per class from each "
                        "call (dm, gm).", ZERO_ORDER),
    "updater": Option("Network and robust updater"),
    "alpha": Option("Network and robust updater", "CVaR fraction in (0, 1].",
                    "--updater robust"),
    "cvar_tail": Option("Network and robust updater", needs="--updater robust"),
    "cvar_terms": Option("Network and robust updater", "CVaR aggregates over clusters added to "
                         "CE.", "--updater robust"),
    "clusters": Option("Network and robust updater", "Cluster centres per class when IPC > 10.",
                       "--updater robust"),
    "cluster_space": Option("Network and robust updater", needs="--updater robust"),
    "batch_size": Option("Network and robust updater", "Real samples per class each "
                         "iteration."),
    "update_batch": Option("Network and robust updater", "Of those, per class, the network "
                           "update trains on (default: all: one batch serves the update and "
                           "the matching).", TRAINS),
    "one_pass": Option("Network and robust updater", "The network update shares dm's forward "
                       "pass over the real batch (its augmented images): one pass instead of "
                       "two; the matching then sees the network before the step's update, "
                       "which lands after S's step.", TRAINS),
    "model_lr": Option("Network and robust updater", "Network learning rate."),
    "model_steps": Option("Network and robust updater", "Network updates per iteration "
                          "(default {MODEL_STEPS}; with a queue {QUEUE_MODEL_STEPS}, IDM's)."),
    "reinit_every": Option("Network and robust updater", "A fresh network every N iterations "
                           "(default {REINIT_EVERY}; --updater native: the objective's "
                           "schedule)."),
    "queue_size": Option("Network and robust updater", "IDM's queue of networks: networks "
                         "kept, each trained by the updater between uses, one drawn each "
                         "iteration (default: none; --recipe idm: 100)."),
    "queue_every": Option("Network and robust updater", "A new network every N iterations "
                          "(default, by IPC: {QUEUE_EVERY}; IDM's).", QUEUE),
    "queue_train": Option("Network and robust updater", "Networks trained each iteration, "
                          "--model-steps steps each.", QUEUE),
    "ce_weight": Option("Network and robust updater", "dm: the synthetic images' cross-entropy "
                        "under the drawn network, times its training accuracy in percent "
                        "(default, by IPC: {CE_WEIGHT}; IDM's).", QUEUE),
    "pool_size": Option("Network and robust updater", "FRePo's model pool: networks kept, one "
                        "drawn each iteration and then trained one step (on S with --updater "
                        "native, FRePo's way; on real data with ce or robust), reset after "
                        "--pool-steps (default: none; --recipe frepo: {POOL_SIZE})."),
    "pool_steps": Option("Network and robust updater", "A pool network's training steps before "
                         "it is reset (default {POOL_STEPS}, FRePo's).", "--pool-size"),
    "pool_lr": Option("Network and robust updater", "The pool networks' Adam step size (default "
                      "{POOL_LR}, FRePo's), whichever --updater trains them.", "--pool-size"),
    "network": Option("Network and robust updater", "The step's network: convnet (its "
                      "variants convnet-nn, ...) or another zodd.models name with features, "
                      "e.g. frepo (FRePo's Conv: widths 128, 256, 512, no norm)."),
    "width": Option("Network and robust updater", "ConvNet width (default: by image size: "
                    "{large[0]} for 28-32 px, {small[0]} for 8 px)."),
    "depth": Option("Network and robust updater", "ConvNet depth (default: by image size: "
                    "{large[1]} for 28-32 px, {small[1]} for 8 px)."),
    "iterations": Option("Budget", "The first budget reached ends the run; the set is saved."),
    "max_seconds": Option("Budget", "Stop once this much time is spent (checked after each "
                          "iteration: the last may end past it)."),
    "max_queries": Option("Budget", "Stop once this many objective queries are spent (checked "
                          "after each iteration)."),
    "device": Option("Parallel and devices", "auto, cpu, cuda, cuda:N or mps (auto: a CUDA GPU "
                     "when there is one)."),
    "compile": Option("Parallel and devices", "Run the network's passes over the real batch "
                      "(dm's embedding, the updater's forward and backward) through "
                      "torch.compile: faster per iteration after a one-time compile of about "
                      "10-30 s; values differ from eager by float rounding. Needs a C++ "
                      "compiler on the CPU."),
    "workers": Option("Parallel and devices", "Ray actors evaluating candidates (0: "
                      "in-process).", ZERO_ORDER),
    "ray_address": Option("Parallel and devices", "Join this Ray cluster instead of a local "
                          "one.", "--workers"),
    "retries": Option("Parallel and devices", "Further tries of a failed evaluation."),
    "worker_retries": Option("Parallel and devices", "Times the candidates of a Ray worker that "
                             "died are scored again, on the worker restarted (on any live node); "
                             "then the run stops, its last step saved.", "--workers"),
    "max_failures": Option("Parallel and devices", "Failed evaluations tolerated before the run "
                           "ends."),
    "checkpoint_every": Option("Run directory", "Iterations between checkpoints (default: about "
                               "once a minute)."),
}

# names an option takes beyond its registry's, and families of names checked later
EXTRA = {"recipe": {"list": "print the recipes and their settings"},
         "init": {"auto": "real for the matching objectives, dm for the scores"},
         "estimator": {"auto": "autograd when the objective is differentiable, else es "
                               "(gaussian with --surrogate)"},
         "optimizer": {"auto": "sgd at the objective's lr for dm and gm, paper for scores"}}
PATTERNS = {"dataset": "PATH: your own data, a folder tree (PATH/train/<class>/*.png and "
                       "PATH/test/<class>/..., or PATH/<class>/... split by --test-fraction) "
                       "or an .npz with x_train, y_train, x_test, y_test",
            "init": "PATH: start from a distilled set (a run directory or any file zodd "
                    "evaluate reads)",
            "optimizer": "ng:NAME: a nevergrad optimiser, asked --directions candidates a step"}
RUN_OPTIONS = {"config_file": "Data", "no_robust": "Network and robust updater",
               "resume_dir": "Run directory", "out": "Run directory", "overwrite": "Run directory",
               "quiet": "Run directory"}


def constant(value) -> str:
    """A zodd.plan default for help: a (ipc from, value) table as 'IPC 1+: 5, IPC 2+: 30'."""
    if isinstance(value, tuple):
        return ", ".join(f"IPC {start}+: {v}" for start, v in value)
    return f"{value:,}" if isinstance(value, int) else str(value)


def group_of(name: str) -> str:
    """The --help heading of ``zodd distill``'s option ``name`` (its parameter's name)."""
    return OPTIONS[name].group if name in OPTIONS else RUN_OPTIONS.get(name, "Run directory")


def help_text(name: str, values: dict) -> str:
    """Setting ``name``'s help, its defaults filled in from ``values`` (module docstring) and
    the setting it needs in front."""
    option = OPTIONS[name]
    text = option.help.format(**{k: constant(v) if k.isupper() else v for k, v in values.items()})
    return f"[with {option.needs}] {text}" if option.needs else text
