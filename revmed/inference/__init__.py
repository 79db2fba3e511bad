"""Whole-volume inference from a checkpoint: the library behind ``revmed infer``.

A predictor is a trained network with the model card of its checkpoint (``predictor``):
``Translator`` runs a RevGAN forward (F) or in reverse (G), for super-resolution and domain
adaptation (``translator``); ``Segmenter`` runs a segmentation network (``segmenter``);
``load_predictor`` picks the one a checkpoint's task needs (``loading``). They run a network
over a volume in one of two ways, which validation during training shares: blended sliding
windows (``windows``), or, where the checkpoint holds normalisation statistics, a few large
tiles whose result does not depend on the tiling (``tiles``), with the convolutions fused for
the CPU (``fused``). docs/inference.md has the details.
"""

from revmed.inference.loading import PREDICTORS, load_predictor, newest_checkpoint
from revmed.inference.predictor import Predictor
from revmed.inference.segmenter import Segmenter
from revmed.inference.translator import Translator

__all__ = ["PREDICTORS", "Predictor", "Segmenter", "Translator", "load_predictor",
           "newest_checkpoint"]
