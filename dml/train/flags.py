"""The training scripts' flags: declared once here with their types, ranges and help;
the loss flags come from the loss specs. `check` holds the rules that tie several
flags together; every single-flag rule is in the flag's type."""
import argparse

from dml import losses, models, recorded_flags, run_record
from dml.cli import add_arguments, given
from dml.data import imgtool
from dml.errors import UserError
from dml.flag_types import (
    DefaultSeed,
    adam_betas,
    choice,
    increasing_ints,
    nonnegative_float,
    nonnegative_int,
    parse_adam_betas,
    parse_increasing_ints,
    positive_float,
    positive_int,
)
from dml.script_flags import add_data_arguments, add_engine_argument, add_model_arguments, check_test_lists

from .amp import AMP_DTYPES

LR_STRATEGIES = ("piecewise_decay", "cosine_decay")
OPTIMIZERS = ("momentum", "adamw")
#: --weight_decay and --loss_weight_decay when left out, per --optimizer
DEFAULT_DECAY = {"momentum": 1e-4, "adamw": 0.05}
DEFAULT_LOSS_DECAY = {"momentum": 1e-4, "adamw": 0.0}
BATCH_RULES = {"elem": ".", "pair": "; each device's share must be divisible by 3 for triplet, and by "
                                    "--samples_each_class, with at least 2 classes, for the other losses."}


def add_training_arguments(parser, family, *, train_batch_size, lr, lr_steps, total_iter_num,
                           test_iter_step, save_iter_step, loss_name):
    """Every flag of a training script of `family` ("elem" or "pair"), with its defaults."""
    add_model_arguments(parser, "Left out when resuming, or when fine-tuning a checkpoint of this toolkit: the "
                                "value recorded in its state.json.")
    add_arguments("train_batch_size", positive_int, train_batch_size,
                  "Images per training step, over all devices (split evenly between them, so a multiple of "
                  "their number)" + BATCH_RULES[family], parser)
    add_arguments("test_batch_size", positive_int, 50, "Images per forward pass of the periodic test.", parser)
    class_help = ("Number of training classes: rows of the classifier / proxies (SOP: 11318)." if family == "elem"
                  else "Number of training classes; kept from the original, not read by the pair losses.")
    add_arguments("class_dim", positive_int, 11318, class_help, parser)
    add_arguments("lr", positive_float, lr, "Initial learning rate (after --warmup_iters); --lr_strategy lowers "
                  "it.", parser)
    add_arguments("optimizer", choice(*OPTIMIZERS), "momentum",
                  "momentum (the original: momentum 0.9, L2 decay --weight_decay added to the gradient) or adamw "
                  "(Adam with decoupled weight decay --weight_decay, betas --adam_betas; Loshchilov & Hutter, "
                  "ICLR 2019).", parser)
    add_arguments("weight_decay", nonnegative_float, None,
                  f"Weight decay of the network's parameters: L2 decay under momentum (left out: "
                  f"{DEFAULT_DECAY['momentum']:g}, the original's), decoupled decay under adamw (left out: "
                  f"{DEFAULT_DECAY['adamw']:g}).", parser)
    add_arguments("adam_betas", adam_betas, "0.9,0.999",
                  "adamw's beta1,beta2 (decay rates of the gradient's running mean and mean square).", parser)
    add_arguments("warmup_iters", nonnegative_int, 0,
                  "Raise the learning rate linearly from 0 to --lr over this many first iterations, then follow "
                  "--lr_strategy (cosine_decay then reaches 0 at --total_iter_num; --lr_steps count from the "
                  "run's start). 0: no warmup.", parser)
    add_arguments("clip_grad_norm", nonnegative_float, 0.0,
                  "Scale the gradients down so that their global L2 norm (network and loss layer together) is "
                  "at most this. 0: no clipping.", parser)
    add_arguments("lr_strategy", choice(*LR_STRATEGIES), "piecewise_decay",
                  "Learning-rate schedule: piecewise_decay (x0.1 at each of --lr_steps) or cosine_decay "
                  "(to 0 at --total_iter_num).", parser)
    add_arguments("lr_steps", increasing_ints, lr_steps,
                  "Iterations at which piecewise_decay multiplies the learning rate by 0.1 (comma-separated).",
                  parser)
    add_arguments("total_iter_num", positive_int, total_iter_num, "Training iterations in all.", parser)
    add_arguments("display_iter_step", positive_int, 10,
                  "Print a log line (averages since the last one) every this many iterations.", parser)
    add_arguments("test_iter_step", positive_int, test_iter_step,
                  "Test Recall@1 on --test_list every this many iterations.", parser)
    add_arguments("save_iter_step", positive_int, save_iter_step,
                  "Save a checkpoint every this many iterations (and at the end).", parser)
    add_arguments("with_mem_opt", bool, True, "Accepted for compatibility; a no-op (Paddle manages memory).",
                  parser)
    add_arguments("pretrained_model", str, None,
                  "Network weights to start from (fine-tuning): a checkpoint directory or .pdparams of this "
                  "toolkit, a paddle.vision state dict, a legacy Fluid directory, a PyTorch .pth/.safetensors "
                  "state dict (timm/DINO ViT, torchvision ResNet), or 'imagenet'.", parser)
    add_arguments("drop_embedding", bool, False,
                  "Fine-tuning a checkpoint with another --embedding_size: drop its trained embedding layer and "
                  "train a new one (without this flag that is refused).", parser, nargs="?", const=True)
    add_arguments("checkpoint", str, None,
                  "Resume a run: a checkpoint directory, a directory of numbered checkpoints (its newest), "
                  "or 'latest' (the newest under --model_save_dir/--model). The flags left out are the "
                  "checkpoint's; a flag that changes what the run computes must equal it.", parser)
    add_arguments("model_save_dir", str, "output",
                  "Checkpoints go to <model_save_dir>/<model>/<iteration>/ (refused when it holds another "
                  "run's checkpoints, unless --overwrite). Left out on a resume: the checkpoint's own run "
                  "directory.", parser)
    add_arguments("overwrite", bool, False,
                  "Remove the checkpoints another run left in <model_save_dir>/<model>/ before training.",
                  parser, nargs="?", const=True)
    family_losses = losses.names(family)
    add_arguments("loss_name", loss_name_of(family), loss_name,
                  f"Loss: one of {', '.join(family_losses)}. "
                  + "; ".join(f"{n}: {losses.spec(n).summary.rstrip('.')}" for n in family_losses) + ".",
                  parser)
    add_loss_arguments(parser, family)
    add_arguments("loss_lr_mult", positive_float, 1.0,
                  "Learning-rate multiplier for the loss layer's own parameters (class weights, proxies; "
                  "Proxy-Anchor's authors train proxies at 100).", parser)
    add_arguments("loss_weight_decay", nonnegative_float, None,
                  f"Weight decay of the loss layer's own parameters (class weights, proxies), of --optimizer's "
                  f"kind; left out: {DEFAULT_LOSS_DECAY['momentum']:g} under momentum (the original's), "
                  f"{DEFAULT_LOSS_DECAY['adamw']:g} under adamw (proxies are not decayed, as "
                  f"pytorch-metric-learning's examples train them).", parser)
    if family == "pair":
        memory_losses = ", ".join(n for n in losses.names("pair") if losses.spec(n).reference_set)
        add_arguments("xbm_size", nonnegative_int, 0,
                      "Cross-batch memory (Wang et al., XBM, CVPR 2020): compare each batch also with the last "
                      f"this many training embeddings, of every rank's share of each batch (0: off; at least "
                      f"--train_batch_size). "
                      f"Losses: {memory_losses}.", parser)
        add_arguments("xbm_start_iter", nonnegative_int, 0,
                      "Iteration from which the cross-batch memory is filled and used.", parser)
    add_engine_argument(parser, training=True)
    add_arguments("log_dir", str, None, "Write training curves (loss, lr, accuracy or recall, test recall) as "
                  "VisualDL scalars to this directory (needs: pip install visualdl==2.5.3).", parser)
    add_arguments("amp", bool, False, "Mixed precision: the network in --amp_dtype, the losses in float32 (GPU: "
                  "autocast; CPU: bfloat16 only, the convolutions of --engine static).", parser)
    add_arguments("amp_dtype", choice(*AMP_DTYPES), "float16",
                  "--amp's dtype: float16 (GPU only, dynamic loss scaling, one read from the GPU per step) or "
                  "bfloat16 (no scaler; GPUs of compute capability 8.0 and newer, CPUs with avx512_bf16 or AMX).",
                  parser)
    add_arguments("enable_ce", bool, False,
                  "Continuous evaluation: test at the end and print the 'kpis' lines (train_cost, test_recall).",
                  parser)
    add_arguments("test_before_training", bool, False,
                  "Also test Recall@1 before the first step (logged as trainbatch 0): the starting point.",
                  parser)
    add_data_arguments(parser)


def loss_name_of(family):
    """argparse type of --loss_name: a loss this script trains (a loss of the other
    script is named with the script that trains it)."""
    own = losses.names(family)

    def parse(text):
        if text in own:
            return text
        where = f"{text!r} is trained by {losses.spec(text).script}" if text in losses.names() else \
            f"unknown loss {text!r}"
        raise argparse.ArgumentTypeError(f"{where}; this script trains {', '.join(own)}")

    parse.__name__ = "loss_name"
    return parse


def add_loss_arguments(parser, family):
    """One flag per loss parameter of the family's losses (a flag several losses share,
    such as --margin, is declared once and says which losses read it)."""
    users = {}
    for name in losses.names(family):
        for param in losses.spec(name).params:
            users.setdefault(param.flag, (param, []))[1].append(name)
    for flag, (param, names) in users.items():
        add_arguments(flag, param.type, param.default, f"{param.help} Used by: {', '.join(names)}.", parser)


def loss_params(args):
    """The chosen loss's constructor arguments, from its flags."""
    return {p.name: getattr(args, p.flag) for p in losses.spec(args.loss_name).params}


def run_identity(args):
    """What state.json records at its top level besides the flags: the network's
    record (dml.run_record, without weights: they are the checkpoint) and the loss."""
    record = run_record.describe(args.model, args.embedding_size, args.image_shape).as_dict()
    identity = {key: record[key] for key in ("model", "embedding_size", "image_shape", "preprocessing")}
    identity["loss_name"] = args.loss_name
    if losses.spec(args.loss_name).classes:
        identity["class_dim"] = args.class_dim
    if getattr(args, "xbm_size", 0):
        identity["xbm_size"] = args.xbm_size
    return identity


def settle_fine_tune(args):
    """A fine-tune of a checkpoint of this toolkit builds the network its record
    describes: the network flags left out come from it; another --image_shape is
    allowed, and so is an embedding layer on a checkpoint without one (the
    configuration block shows both); another --embedding_size would drop the trained
    embedding layer, so it needs --drop_embedding."""
    if args.pretrained_model == "imagenet":
        return
    record = run_record.of_weights(args.pretrained_model)
    if record is None:
        return
    recorded = record.embedding_size
    if given(args, "embedding_size") and recorded and args.embedding_size != recorded and not args.drop_embedding:
        raise UserError(f"--embedding_size={args.embedding_size} differs from {recorded} recorded in "
                        f"{record.where()}: its trained embedding layer would be dropped; leave the flag out to "
                        f"fine-tune it, or pass --drop_embedding to train a new one")
    changeable = ("image_shape", "embedding_size") if args.drop_embedding or recorded == 0 else ("image_shape",)
    recorded_flags.settle_network(args, record, changeable)


def settle_optimizer_defaults(values):
    """In a {flag: value} dict (a parsed Namespace's vars, a checkpoint's flags):
    --weight_decay and --loss_weight_decay left out become --optimizer's defaults, so
    state.json records the values the run used."""
    optimizer = values.get("optimizer") or "momentum"
    if values.get("weight_decay") is None:
        values["weight_decay"] = DEFAULT_DECAY[optimizer]
    if values.get("loss_weight_decay") is None:
        values["loss_weight_decay"] = DEFAULT_LOSS_DECAY[optimizer]


def optimizer_settings(args):
    """make_optimizer's keyword arguments from the flags."""
    return dict(lr_strategy=args.lr_strategy, lr_steps=lr_steps(args), total_iter_num=args.total_iter_num,
                optimizer=args.optimizer, weight_decay=args.weight_decay,
                adam_betas=parse_adam_betas(args.adam_betas), warmup_iters=args.warmup_iters)


def lr_steps(args):
    return parse_increasing_ints(args.lr_steps)


def image_size(args):
    return imgtool.parse_image_shape(args.image_shape)[1]


def check(args, family):
    """The rules that tie several flags together (each flag's own range is in its type)."""
    models.check_image_size(args.model, image_size(args))
    check_test_lists(args)
    check_warmup(args)
    spec = losses.spec(args.loss_name)
    if spec.family != family:
        raise UserError(f"--loss_name={args.loss_name} is trained by {spec.script}")
    if getattr(args, "xbm_size", 0) and not spec.reference_set:
        users = ", ".join(n for n in losses.names() if losses.spec(n).reference_set)
        raise UserError(f"--xbm_size works with the losses that compare a batch with a memory ({users}), "
                        f"not {args.loss_name}; use --xbm_size=0")


def check_warmup(args):
    """The warmup ends before the run does, and before piecewise_decay's first step."""
    if args.warmup_iters >= args.total_iter_num:
        raise UserError(f"--warmup_iters={args.warmup_iters} leaves no iteration of the --total_iter_num="
                        f"{args.total_iter_num}: use fewer warmup iterations")
    first_step = lr_steps(args)[0]
    if args.lr_strategy == "piecewise_decay" and args.warmup_iters >= first_step:
        raise UserError(f"--warmup_iters={args.warmup_iters} reaches the first of --lr_steps={args.lr_steps}: "
                        f"warm up for fewer than {first_step} iterations, or move the steps later")


def check_memory(args):
    """The cross-batch memory must hold at least one global batch (every rank pushes
    the whole of it)."""
    size, batch = getattr(args, "xbm_size", 0), args.train_batch_size
    if size and size < batch:
        raise UserError(f"--xbm_size={size} is smaller than a batch (--train_batch_size={batch}): "
                        f"use at least {batch}, or 0 to switch the memory off")


def repeatable(args):
    """Whether the run asks to repeat exactly: --seed on the command line or --enable_ce."""
    return args.enable_ce or not isinstance(args.seed, DefaultSeed)
