"""Every loss the toolkit trains with: one entry each. Adding a loss = its file + one
entry here (the scripts, checks, sampler choice, README table and tests follow)."""
import math

from dml.flag_types import float_in, int_at_least, nonnegative_float, positive_float

from .arcmarginloss import ArcMarginLoss
from .emlloss import EmlLoss
from .npairsloss import NpairsLoss
from .quadrupletloss import QuadrupletLoss
from .softmaxloss import SoftmaxLoss
from .spec import LossSpec, Param, blocks_for, pairs, triples
from .tripletloss import TripletLoss

ARC_PARAMS = (
    Param("scale", "arc_scale", positive_float, 80.0, "Scale s of the arc-margin logits s*cos (the original used 80)."),
    Param("margin", "arc_margin", float_in(0.0, math.pi / 2, unit=" radians"), 0.15,
          "Additive angular margin m in radians: the true class's logit is s*cos(theta + m)."),
    Param("easy_margin", "arc_easy_margin", bool, False,
          "Apply the margin only where cos > 0 (else the original's linear fallback past theta = pi - m)."),
)
MARGIN = Param("margin", "margin", nonnegative_float, 0.1,
               "Margin between positive and negative squared distances of unit embeddings.")
SAMPLES = Param("samples_each_class", "samples_each_class", int_at_least(2), 2,
                "Images of each class in a class-balanced batch (the batch must divide by it; npairs needs 2).")

SPECS = (
    LossSpec("softmax", SoftmaxLoss, "elem", "elem", classes=True, probs=True,
             summary="Softmax cross entropy over a fully connected classifier (the original's)."),
    LossSpec("arcmargin", ArcMarginLoss, "elem", "elem", classes=True, probs=True, params=ARC_PARAMS,
             summary="ArcFace additive angular margin (Deng et al., ArcFace, CVPR 2019)."),
    LossSpec("triplet", TripletLoss, "pair", "triplet", params=(MARGIN,), batch_rule=triples,
             summary="Triplet loss on (anchor, positive, negative) rows (Schroff et al., FaceNet, CVPR 2015)."),
    LossSpec("quadruplet", QuadrupletLoss, "pair", "balanced", params=(SAMPLES, MARGIN),
             batch_rule=blocks_for("quadruplet"),
             summary="Hardest positive pair against hardest negative pair of the batch (Chen et al., CVPR 2017)."),
    LossSpec("eml", EmlLoss, "pair", "balanced", params=(SAMPLES,), batch_rule=blocks_for("eml"),
             summary="Ensemble metric loss: easy positives, hard negatives, made stable (the original's)."),
    LossSpec("npairs", NpairsLoss, "pair", "balanced",
             params=(SAMPLES, Param("reg_lambda", "npairs_reg_lambda", nonnegative_float, 0.01,
                                    "Weight of the L2 penalty on the raw embeddings.")),
             batch_rule=blocks_for("npairs", rule=pairs),
             summary="Multi-class N-pair loss (Sohn, NeurIPS 2016); pairs of one class."),
)
