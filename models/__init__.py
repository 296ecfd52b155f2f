"""Networks (flax.nnx), priors, likelihoods and the tempered `Posterior`."""

from weightspace.models.cnn_lstm import CNNLSTM
from weightspace.models.deep_linear import DeepLinear
from weightspace.models.lenet import LeNet5
from weightspace.models.likelihood import Categorical, Gaussian
from weightspace.models.mlp import MLP
from weightspace.models.network import Network
from weightspace.models.posterior import Posterior, posterior
from weightspace.models.prior import GaussianPrior
from weightspace.models.resnet import ResNet20FRN

__all__ = ["MLP", "LeNet5", "ResNet20FRN", "CNNLSTM", "DeepLinear", "Network",
           "Categorical", "Gaussian", "GaussianPrior", "Posterior", "posterior"]
