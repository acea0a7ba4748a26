"""Builds legacy Fluid weight directories with Paddle itself, for the loader's tests.

The variable names and shapes below are written independently of `models/`: they
follow the original networks' naming code (PaddleCV v1.4 metric_learning
models/resnet.py for ResNet50/101/152, PaddleClas' fluid ResNet for the basic-block
ResNet18/34, `fluid.layers.fc` default names for the embedding), so the tests check the
loader's name map against the original convention rather than against itself.

Run as a script in a fresh process with FLAGS_enable_pir_api=0 (see `build_legacy_dir`):
    python fixtures_legacy.py OUTDIR NPZ MODEL EMBEDDING_SIZE SEED [--extras]
"""
import subprocess
import sys

import environment
import numpy as np

DEPTHS = {18: [2, 2, 2, 2], 34: [3, 4, 6, 3], 50: [3, 4, 6, 3], 101: [3, 4, 23, 3], 152: [3, 8, 36, 3]}
NUM_FILTERS = [64, 128, 256, 512]

# Non-weight variables an original training run left beside the weights.
EXTRA_VARS = [
    ("learning_rate_0", [1], "float32"),
    ("@LR_DECAY_COUNTER@", [1], "int64"),
    ("conv1_weights_velocity_0", [64, 3, 7, 7], "float32"),
]


def _conv_bn(name, ch_in, ch_out, size):
    """Variables of the original conv_bn_layer(name=...)."""
    bn_name = "bn_" + name if name == "conv1" else "bn" + name[3:]
    yield name + "_weights", [ch_out, ch_in, size, size]
    for suffix in ("_scale", "_offset", "_mean", "_variance"):
        yield bn_name + suffix, [ch_out]


def _block_name(layers, block, i):
    if layers in [101, 152] and block == 2:
        return "res4a" if i == 0 else "res4b" + str(i)
    return "res" + str(block + 2) + chr(97 + i)


def original_resnet_vars(model_name, embedding_size=0):
    """(name, shape) of every weight of the original network, in definition order."""
    layers = int(model_name.replace("ResNet", ""))
    out = list(_conv_bn("conv1", 3, 64, 7))
    ch_in = 64
    for block, count in enumerate(DEPTHS[layers]):
        filters = NUM_FILTERS[block]
        for i in range(count):
            name = _block_name(layers, block, i)
            stride = 2 if i == 0 and block != 0 else 1
            if layers >= 50:
                ch_out = filters * 4
                out += _conv_bn(name + "_branch2a", ch_in, filters, 1)
                out += _conv_bn(name + "_branch2b", filters, filters, 3)
                out += _conv_bn(name + "_branch2c", filters, ch_out, 1)
                projection = ch_in != ch_out or stride != 1
            else:
                ch_out = filters
                out += _conv_bn(name + "_branch2a", ch_in, filters, 3)
                out += _conv_bn(name + "_branch2b", filters, filters, 3)
                projection = ch_in != ch_out or stride != 1 or block == i == 0
            if projection:
                out += _conv_bn(name + "_branch1", ch_in, ch_out, 1)
            ch_in = ch_out
    if embedding_size > 0:
        out += [("fc_0.w_0", [ch_in, embedding_size]), ("fc_0.b_0", [embedding_size])]
    return out


def random_values(name, shape, dtype, rng):
    """Plausible random weights: He-scaled convs, positive BN variances."""
    if dtype == "int64":
        return rng.integers(0, 100, size=shape).astype(np.int64)
    if name.endswith("_variance"):
        return rng.uniform(0.5, 1.5, size=shape).astype(dtype)
    if name.endswith("_weights") or name.endswith("w_0"):
        fan_in = int(np.prod(shape[1:])) if len(shape) == 4 else shape[0]
        return (rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)).astype(dtype)
    return (rng.standard_normal(shape) * 0.1).astype(dtype)


def _write_with_paddle(outdir, arrays):
    """Save `arrays` (name -> numpy) one file per variable with fluid-era save_vars."""
    import paddle

    paddle.enable_static()
    main, startup = paddle.static.Program(), paddle.static.Program()
    with paddle.static.program_guard(main, startup):
        variables = [
            paddle.static.create_parameter(list(a.shape), str(a.dtype), name=name)
            if a.dtype != np.int64
            else paddle.static.create_global_var(list(a.shape), 0, "int64", persistable=True, name=name)
            for name, a in arrays.items()
        ]
    place = paddle.CPUPlace()
    exe = paddle.static.Executor(place)
    exe.run(startup)
    scope = paddle.static.global_scope()
    for name, value in arrays.items():
        scope.find_var(name).get_tensor().set(value, place)
    paddle.static.io.save_vars(exe, outdir, main_program=main, vars=variables)


def main(argv):
    outdir, npz_path, model_name, embedding_size, seed = argv[:5]
    specs = [(n, s, "float32") for n, s in original_resnet_vars(model_name, int(embedding_size))]
    if "--extras" in argv:
        specs += EXTRA_VARS
    rng = np.random.default_rng(int(seed))
    arrays = {name: random_values(name, shape, dtype, rng) for name, shape, dtype in specs}
    _write_with_paddle(outdir, arrays)
    np.savez(npz_path, **arrays)


def build_legacy_dir(outdir, model_name, embedding_size=0, seed=0, extras=False):
    """Write a legacy directory in a fresh process; return the arrays it holds."""
    npz_path = str(outdir) + ".npz"
    env = environment.clean(FLAGS_enable_pir_api="0")
    cmd = [sys.executable, __file__, str(outdir), npz_path, model_name, str(embedding_size), str(seed)]
    proc = subprocess.run(cmd + (["--extras"] if extras else []), env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError("legacy fixture builder failed:\n" + proc.stderr[-3000:])
    with np.load(npz_path) as data:
        return {name: data[name] for name in data.files}


if __name__ == "__main__":
    main(sys.argv[1:])
