"""Deep metric learning on PaddlePaddle 3: the library behind the `dml` command and the
scripts of the original `metric_learning` example.

    dml.losses      loss layers, one per file, declared once in dml/losses/catalog.py
    dml.models      embedding networks by name, declared once in dml/models/backbones.py
    dml.data        image lists, samplers, decoding and transforms, data-set converters
    dml.weights     weights files read by parsing, never by unpickling
    dml.train       the training loop, its flags, monitoring, checkpoints, interrupts
    dml.retrieval   feature extraction, exact retrieval metrics, grids, exported predictors
    dml.index       the gallery index and its search
    dml.runtime     devices, CPU acceleration, Paddle internals
    dml.commands    the commands (`dml eval`, ... and the root scripts) as functions
"""
import os
import warnings

from dml.runtime import paddle_import, threads  # noqa: F401 (threads reads OMP_NUM_THREADS before Paddle does)

__version__ = "0.3.0.dev0"

# Paddle's import-time, BatchNorm and graph-compiler notices say nothing a user of these
# commands can act on. Effective because every module of the toolkit is imported through
# this package, before paddle.
os.environ.setdefault("GLOG_minloglevel", "2")
warnings.filterwarnings("ignore", message="No ccache found")
warnings.filterwarnings("ignore", message="When training, we now always track global mean and variance")
paddle_import.hide_thread_notice()
