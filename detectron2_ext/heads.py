"""The involution heads: the RPN's 3x3 convolution and the mask head's four 3x3 convolutions become involutions
(each followed by its ReLU), as in the paper; everything else is Detectron2's standard head. Also Semantic FPN's
head as mmseg's (dropout, loss averaging)."""

from detectron2.config import configurable
from detectron2.modeling import SEM_SEG_HEADS_REGISTRY
from detectron2.modeling.meta_arch.semantic_seg import SemSegFPNHead
from detectron2.modeling.proposal_generator.rpn import RPN_HEAD_REGISTRY, StandardRPNHead
from detectron2.modeling.roi_heads import ROI_MASK_HEAD_REGISTRY, MaskRCNNConvUpsampleHead
from torch import nn

from .neck import involution_args, involution_like


@RPN_HEAD_REGISTRY.register()
class InvolutionRPNHead(StandardRPNHead):
    """StandardRPNHead with an involution + ReLU in place of each shared 3x3 conv + ReLU."""

    @configurable
    def __init__(self, *, involution: dict, **kwargs):
        super().__init__(**kwargs)
        if isinstance(self.conv, nn.Sequential):
            for name, conv in list(self.conv.named_children()):
                setattr(self.conv, name, involution_like(conv, involution))
        else:
            self.conv = involution_like(self.conv, involution)

    @classmethod
    def from_config(cls, cfg, input_shape):
        return {**super().from_config(cfg, input_shape), "involution": involution_args(cfg)}


@ROI_MASK_HEAD_REGISTRY.register()
class InvolutionMaskHead(MaskRCNNConvUpsampleHead):
    """Mask R-CNN's mask head with an involution + ReLU in place of each 3x3 conv + ReLU (the upsampling
    deconvolution and the 1x1 predictor stay)."""

    @configurable
    def __init__(self, input_shape, *, involution: dict, **kwargs):
        super().__init__(input_shape, **kwargs)
        for index, conv in enumerate(self.conv_norm_relus):
            self.conv_norm_relus[index] = involution_like(conv, involution)
            setattr(self, f"mask_fcn{index + 1}", self.conv_norm_relus[index])

    @classmethod
    def from_config(cls, cfg, input_shape):
        return {**super().from_config(cfg, input_shape), "involution": involution_args(cfg)}


@SEM_SEG_HEADS_REGISTRY.register()
class MMSegFPNHead(SemSegFPNHead):
    """Detectron2's Semantic FPN head as mmseg's FPNHead in the official configs: channel dropout
    (MODEL.SEM_SEG_HEAD.DROPOUT, 0.1 there) on the summed features before the 1x1 classifier, and the
    cross-entropy averaged over all pixels with the ignored ones counting 0 (mmseg's until avg_non_ignore,
    open-mmlab/mmsegmentation#1409) rather than over the labelled pixels."""

    @configurable
    def __init__(self, input_shape, *, dropout: float, **kwargs):
        super().__init__(input_shape, **kwargs)
        self.dropout = nn.Dropout2d(dropout)

    @classmethod
    def from_config(cls, cfg, input_shape):
        return {**super().from_config(cfg, input_shape), "dropout": cfg.MODEL.SEM_SEG_HEAD.DROPOUT}

    def layers(self, features):
        x = sum(head(features[name]) for name, head in zip(self.in_features, self.scale_heads))
        return self.predictor(self.dropout(x))

    def losses(self, predictions, targets):
        labelled = (targets != self.ignore_value).sum() / targets.numel()
        return {name: loss * labelled for name, loss in super().losses(predictions, targets).items()}
