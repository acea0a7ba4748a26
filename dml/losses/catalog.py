"""Every loss the toolkit trains with: one entry each. Adding a loss = its file + one
entry here (the scripts, checks, sampler choice, README table and tests follow)."""
import math

from dml.flag_types import finite_float, float_in, int_at_least, nonnegative_float, positive_float

from .arcmarginloss import ArcMarginLoss
from .circle import CircleLoss
from .contrastive import ContrastiveLoss
from .cosface import CosFaceLoss
from .emlloss import EmlLoss
from .multisimilarity import MultiSimilarityLoss
from .npairsloss import NpairsLoss
from .proxyanchor import ProxyAnchorLoss
from .quadrupletloss import QuadrupletLoss
from .softmaxloss import SoftmaxLoss
from .spec import LossSpec, Param, blocks_for, pairs, triples
from .subcenter_arcmargin import SubCenterArcMarginLoss
from .supcon import SupConLoss
from .trihard import TriHardLoss
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
                "Images of each class in a class-balanced batch: --train_batch_size (each device's share of it "
                "with several devices) must be divisible by it and hold at least 2 classes; at least 2, and "
                "exactly 2 for npairs.")

SPECS = (
    LossSpec("softmax", SoftmaxLoss, "elem", "elem", classes=True, probs=True,
             summary="Softmax cross entropy over a fully connected classifier (the original's)."),
    LossSpec("arcmargin", ArcMarginLoss, "elem", "elem", classes=True, probs=True, params=ARC_PARAMS,
             summary="ArcFace additive angular margin (Deng et al., ArcFace, CVPR 2019)."),
    LossSpec("cosface", CosFaceLoss, "elem", "elem", classes=True, probs=True,
             params=(Param("scale", "cos_scale", positive_float, 64.0, "Scale s of the CosFace logits s*(cos - m)."),
                     Param("margin", "cos_margin", nonnegative_float, 0.35,
                           "Additive cosine margin m subtracted from the true class's cosine.")),
             summary="CosFace large-margin cosine loss (Wang et al., CosFace, CVPR 2018)."),
    LossSpec("subcenter_arcmargin", SubCenterArcMarginLoss, "elem", "elem", classes=True, probs=True,
             params=(Param("sub_centers", "sub_centers", int_at_least(1), 3,
                           "Centres per class; a sample's cosine to its class is its best centre's."),) + ARC_PARAMS,
             summary="Sub-center ArcFace: K centres per class, robust to noisy labels "
                     "(Deng et al., Sub-center ArcFace, ECCV 2020)."),
    LossSpec("proxyanchor", ProxyAnchorLoss, "elem", "elem", classes=True,
             params=(Param("alpha", "proxy_alpha", positive_float, 32.0, "Scale alpha of the proxy similarities."),
                     Param("margin", "proxy_margin", nonnegative_float, 0.1,
                           "Margin delta of the proxy similarities.")),
             summary="Proxy-Anchor: each class proxy pulls its samples and pushes the rest; train its proxies "
                     "faster with --loss_lr_mult (Kim et al., Proxy Anchor Loss, CVPR 2020)."),
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
    LossSpec("multisimilarity", MultiSimilarityLoss, "pair", "balanced", reference_set=True,
             batch_rule=blocks_for("multisimilarity"),
             params=(Param("alpha", "ms_alpha", positive_float, 2.0, "Weight alpha of the positive similarities."),
                     Param("beta", "ms_beta", positive_float, 50.0, "Weight beta of the negative similarities."),
                     Param("base", "ms_base", finite_float, 0.5, "Similarity threshold lambda."),
                     Param("epsilon", "ms_epsilon", nonnegative_float, 0.1, "Pair-mining margin epsilon.")),
             summary="Multi-Similarity loss with its pair mining (Wang et al., CVPR 2019)."),
    LossSpec("circle", CircleLoss, "pair", "balanced", reference_set=True, batch_rule=blocks_for("circle"),
             params=(Param("margin", "circle_margin", nonnegative_float, 0.4, "Relaxation margin m."),
                     Param("gamma", "circle_gamma", positive_float, 80.0, "Scale gamma.")),
             summary="Circle loss: self-paced pair weighting (Sun et al., Circle Loss, CVPR 2020)."),
    LossSpec("supcon", SupConLoss, "pair", "balanced", reference_set=True, batch_rule=blocks_for("supcon"),
             params=(Param("temperature", "supcon_temperature", positive_float, 0.1,
                           "Softmax temperature tau of the similarities."),),
             summary="Supervised contrastive loss (Khosla et al., NeurIPS 2020)."),
    LossSpec("contrastive", ContrastiveLoss, "pair", "balanced", reference_set=True,
             batch_rule=blocks_for("contrastive"),
             params=(Param("pos_margin", "pos_margin", nonnegative_float, 0.0,
                           "Positive pairs cost only beyond this Euclidean distance of unit embeddings."),
                     Param("neg_margin", "neg_margin", nonnegative_float, 1.0,
                           "Negative pairs cost only within this Euclidean distance of unit embeddings.")),
             summary="Contrastive loss on pair distances (Hadsell, Chopra & LeCun, CVPR 2006)."),
    LossSpec("trihard", TriHardLoss, "pair", "balanced", reference_set=True, batch_rule=blocks_for("trihard"),
             params=(MARGIN,),
             summary="Batch-hard triplet: hardest positive and negative of each anchor "
                     "(Hermans, Beyer & Leibe, In Defense of the Triplet Loss, 2017)."),
)
