"""Shared helpers of the command-line scripts: flags, printing, device, user errors.

Keeps the original example's names (`add_arguments`, `print_arguments`, `fmt_time`,
`recall_topk`) so code written against it still reads the same.
"""
import argparse
import os
import sys
import time
import warnings

# Paddle's import-time, BatchNorm and graph-compiler notices say nothing a user of these
# scripts can act on. (Effective when this module is imported before paddle.)
os.environ.setdefault("GLOG_minloglevel", "2")
warnings.filterwarnings("ignore", message="No ccache found")
warnings.filterwarnings("ignore", message="When training, we now always track global mean and variance")


class UserError(Exception):
    """A mistake the user can fix (bad flag, missing file, ...).

    Scripts print its message as one line and exit non-zero; never a traceback.
    """

    exit_code = 2


_TRUE = {"true", "t", "yes", "y", "on", "1"}
_FALSE = {"false", "f", "no", "n", "off", "0"}


def str2bool(text):
    """Parse a boolean flag value the way distutils' strtobool did (removed in 3.12)."""
    value = str(text).strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise argparse.ArgumentTypeError(f"expected True or False, got {text!r}")


class ArgumentParser(argparse.ArgumentParser):
    """argparse, but a bad flag is one line on stderr (not the whole usage) and exit code 2."""

    def error(self, message):
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")


def add_arguments(argname, type, default, help, argparser, **kwargs):
    """Add `--argname` to argparser; bool flags accept True/False/true/false/1/0."""
    type = str2bool if type == bool else type
    argparser.add_argument(
        "--" + argname,
        default=default,
        type=type,
        help=help + " Default: %(default)s.",
        **kwargs,
    )


def print_arguments(args):
    """Print the configuration block the original scripts started their logs with."""
    print("-----------  Configuration Arguments -----------")
    for arg, value in sorted(vars(args).items()):
        print("%s: %s" % (arg, value))
    print("------------------------------------------------")
    sys.stdout.flush()


def fmt_time():
    """Current local time as `%Y-%m-%d %H:%M:%S`, the prefix of every log line."""
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime())


def set_cpu_threads(num_threads=None):
    """Let Paddle's CPU kernels use every core (Paddle defaults to one thread)."""
    import paddle

    count = num_threads or len(os.sched_getaffinity(0))
    paddle.base.core.set_num_threads(count)
    return count


def cuda_available():
    """True when this Paddle build has CUDA and sees at least one GPU (no nvidia-smi)."""
    import paddle

    return paddle.device.is_compiled_with_cuda() and paddle.device.cuda.device_count() > 0


def choose_device(use_gpu):
    """Select the device to run on and return its name ('gpu' or 'cpu').

    `use_gpu=True` on a machine or build without CUDA falls back to the CPU and says so
    in one line, instead of failing as the original did.
    """
    import paddle

    if use_gpu and cuda_available():
        paddle.device.set_device("gpu")
        return "gpu"
    if use_gpu:
        print("use_gpu=True but no CUDA device is available to this Paddle build: running on CPU.")
    paddle.device.set_device("cpu")
    set_cpu_threads()
    return "cpu"


def run_cli(main):
    """Run a script's main(); turn a UserError into one line on stderr and an exit code."""
    try:
        main()
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(err.exit_code)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)


def add_data_arguments(parser, train=True):
    """Flags every script shares beyond the original's: where the data is, decode workers, seed."""
    add_arguments("data_dir", str, "data/Stanford_Online_Products",
                  "Root directory that list paths are relative to.", parser)
    if train:
        add_arguments("train_list", str, "Ebay_train.txt", "Training list, relative to data_dir.", parser)
    add_arguments("test_list", str, "Ebay_test.txt", "Test list, relative to data_dir.", parser)
    add_arguments("num_workers", int, 2, "Image decoding worker processes (0: decode in the main process).", parser)
    add_arguments("seed", int, 90, "Random seed for weights, sampling and augmentation.", parser)


def add_training_arguments(parser, *, train_batch_size, lr, lr_steps, total_iter_num,
                           test_iter_step, save_iter_step, loss_name, loss_help):
    """The original flags both train scripts share, with each script's own defaults."""
    add_arguments("model", str, "ResNet50", "Set the network to use.", parser)
    add_arguments("embedding_size", int, 0, "Embedding size (0: pooled backbone features).", parser)
    add_arguments("train_batch_size", int, train_batch_size, "Minibatch size (global, over all devices).", parser)
    add_arguments("test_batch_size", int, 50, "Minibatch size.", parser)
    add_arguments("image_shape", str, "3,224,224", "input image size", parser)
    add_arguments("class_dim", int, 11318, "Class number.", parser)
    add_arguments("lr", float, lr, "set learning rate.", parser)
    add_arguments("lr_strategy", str, "piecewise_decay",
                  "Set the learning rate decay strategy: piecewise_decay or cosine_decay.", parser)
    add_arguments("lr_steps", str, lr_steps, "step of lr", parser)
    add_arguments("total_iter_num", int, total_iter_num, "total_iter_num", parser)
    add_arguments("display_iter_step", int, 10, "display_iter_step.", parser)
    add_arguments("test_iter_step", int, test_iter_step, "test_iter_step.", parser)
    add_arguments("save_iter_step", int, save_iter_step, "save_iter_step.", parser)
    add_arguments("use_gpu", bool, True, "Whether to use GPU or not (falls back to CPU when none).", parser)
    add_arguments("with_mem_opt", bool, True, "Accepted for compatibility; a no-op (Paddle manages memory).", parser)
    add_arguments("pretrained_model", str, None, "Weights to start from (fine-tuning).", parser)
    add_arguments("checkpoint", str, None, "Checkpoint directory to resume the same run from.", parser)
    add_arguments("model_save_dir", str, "output", "model save directory", parser)
    add_arguments("loss_name", str, loss_name, f"Set the loss type to use: {loss_help}.", parser)
    add_engine_argument(parser)
    add_arguments("log_dir", str, None, "Write training curves (loss, lr, accuracy or recall, test recall) as "
                  "VisualDL scalars to this directory (needs: pip install visualdl==2.5.3).", parser)
    add_arguments("amp", bool, False, "Mixed precision (float16 autocast, dynamic loss scaling) on GPU; "
                  "ignored on CPU.", parser)


def write_atomic(target, write):
    """Call write(binary file handle) on a temporary sibling of `target`, then rename it
    into place: readers see the old file or the complete new one, never a partial one."""
    tmp = f"{target}.tmp-{os.getpid()}"
    try:
        with open(tmp, "wb") as handle:
            write(handle)
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write_json_atomic(path, content):
    """Write `content` as indented JSON to `path` atomically (see write_atomic)."""
    import json

    text = json.dumps(content, indent=1, sort_keys=True) + "\n"
    write_atomic(path, lambda handle: handle.write(text.encode()))


def recall_topk(fea, lab, k=1):
    """The original's Recall@k (share of queries with a same-class item among their k
    nearest, itself excluded); computed exactly in blocks by `metrics.recall_topk`."""
    import metrics

    return metrics.recall_topk(fea, lab, k)


def add_engine_argument(parser):
    add_arguments("engine", str, "static",
                  "static: on the CPU, training steps run the backbone's convolutions on oneDNN and feature "
                  "extraction runs the network exported to an in-process paddle.inference predictor "
                  "(3-10x faster); dygraph: Paddle's plain dynamic graph everywhere.", parser)


def add_inference_arguments(parser, batch_size, weights_help):
    """The original flags eval.py and infer.py share (plus --engine)."""
    add_arguments("model", str, "ResNet50", "Set the network to use.", parser)
    add_arguments("embedding_size", int, 0, "Embedding size.", parser)
    add_arguments("batch_size", int, batch_size, "Minibatch size.", parser)
    add_arguments("image_shape", str, "3,224,224", "Input image size.", parser)
    add_arguments("use_gpu", bool, True, "Whether to use GPU or not.", parser)
    add_arguments("with_mem_opt", bool, False, "Accepted for compatibility; a no-op.", parser)
    add_arguments("pretrained_model", str, None, weights_help, parser)
    add_engine_argument(parser)
