"""Which device the scripts run on, and how many CPU threads Paddle's kernels use."""
import paddle

from . import paddle_compat, threads


def set_cpu_threads(num_threads=None):
    """Set the threads of Paddle's CPU kernels (Paddle defaults to one), by default
    to dml.runtime.threads.count(); return the count."""
    count = num_threads or threads.count()
    paddle_compat.set_cpu_threads(count)
    return count


def cuda_available():
    """True when this Paddle build has CUDA and sees at least one GPU (no nvidia-smi)."""
    return paddle.device.is_compiled_with_cuda() and paddle.device.cuda.device_count() > 0


def choose_device(use_gpu):
    """Select the device to run on and return its name ('gpu' or 'cpu').

    `use_gpu=True` on a machine or build without CUDA falls back to the CPU and says so
    in one line, instead of failing as the original did.
    """
    if use_gpu and cuda_available():
        paddle.device.set_device("gpu")
        return "gpu"
    if use_gpu:
        print("use_gpu=True but no CUDA device is available to this Paddle build: running on CPU.")
    paddle.device.set_device("cpu")
    set_cpu_threads()
    return "cpu"


#: Paddle's switch for deterministic cuDNN kernels (convolution algorithms without
#: atomic additions); it exists in CUDA builds only.
CUDNN_DETERMINISTIC = "FLAGS_cudnn_deterministic"


def make_deterministic(device, repeatable):
    """On a GPU, when the run asks to repeat exactly (`repeatable`), make cuDNN choose
    deterministic kernels (slower: see README, "GPU"). The CPU kernels used are
    deterministic already. Returns whether the flag was set."""
    if device != "gpu" or not repeatable:
        return False
    paddle.set_flags({CUDNN_DETERMINISTIC: True})
    return True


def gpu_id(device=None):
    """The GPU number of a Paddle device name ("gpu:2" -> 2; "gpu" -> 0), by default of
    the current device, which under `paddle.distributed.launch --gpus=2,3` is this
    rank's GPU; None when the device is not a GPU."""
    device = paddle.get_device() if device is None else device
    if not device.startswith("gpu"):
        return None
    number = device.partition(":")[2]
    return int(number) if number.isdigit() else 0
