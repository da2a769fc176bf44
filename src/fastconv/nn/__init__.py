"""Layers, a Sequential model, a loss and optimisers over `fastconv.functional`."""
from .init import glorot_uniform, he_normal, make_rng
from .layers import (AvgPool2D, BatchNorm1D, BatchNorm2D, Conv2D, Dense, Dropout, Flatten,
                     GlobalAvgPool2D, L2Pool2D, Layer, MaxPool2D, ReLU)
from .losses import SoftmaxCrossEntropy
from .model import Residual, Sequential, augmentation_rng
from .optim import SGD, Adam, Optimizer

__all__ = ["Layer", "Conv2D", "MaxPool2D", "AvgPool2D", "L2Pool2D", "ReLU", "Flatten", "Dense",
           "Dropout", "BatchNorm2D", "BatchNorm1D", "GlobalAvgPool2D", "Residual", "Sequential",
           "SoftmaxCrossEntropy", "SGD", "Adam", "Optimizer",
           "he_normal", "glorot_uniform", "make_rng", "augmentation_rng"]
