"""ResNet-20 with filter response normalization (FRN) instead of BatchNorm.

The "resnet20_frn_swish" of Izmailov et al. 2021: BatchNorm makes each
example's output depend on the rest of the batch, so the posterior over
weights would not be a posterior over one function; FRN normalizes every
example on its own. On CIFAR-10 (32, 32, 3) with 10 classes it has 274,042
parameters (Izmailov et al. 2021, "What Are Bayesian Neural Network Posteriors
Really Like?").
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import nnx

from weightspace.checks import positive_int
from weightspace.models.activations import ACTIVATIONS, check_activation
from weightspace.models.network import check_input_shape

# He-normal with a truncated normal, as in the bnn_hmc ResNets of Izmailov et al. 2021.
HE_NORMAL = nnx.initializers.variance_scaling(2.0, "fan_in", "truncated_normal")
BLOCKS_PER_STAGE = 3  # depth 20 = 1 stem + 3 stages * 3 blocks * 2 convs + 1 dense
_STAGES = 3


class FilterResponseNorm(nnx.Module):
    """Filter response normalization with a thresholded linear unit (Singh and
    Krishnan 2020), one (gamma, beta, tau) per channel:

        nu2 = mean_{H,W} x^2;  y = gamma * x / sqrt(nu2 + eps) + beta;  max(y, tau)

    x: (batch, height, width, channels) -> same shape.
    """

    def __init__(self, num_features: int, *, eps: float = 1e-6):
        self.gamma = nnx.Param(jnp.ones((num_features,)))
        self.beta = nnx.Param(jnp.zeros((num_features,)))
        self.tau = nnx.Param(jnp.zeros((num_features,)))
        self.eps = eps

    def __call__(self, x: jax.Array) -> jax.Array:
        nu2 = jnp.mean(jnp.square(x), axis=(1, 2), keepdims=True)
        y = self.gamma[...] * x * jax.lax.rsqrt(nu2 + self.eps) + self.beta[...]
        return jnp.maximum(y, self.tau[...])


class ConvFRN(nnx.Module):
    """Conv (bias, He-normal, SAME) then FRN; the activation is left to the caller.

    x: (batch, H, W, in_features) -> (batch, ceil(H/s), ceil(W/s), out_features),
    s = stride.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        kernel_size: int,
        stride: int,
        *,
        rngs: nnx.Rngs,
    ):
        self.conv = nnx.Conv(
            in_features,
            out_features,
            (kernel_size, kernel_size),
            strides=(stride, stride),
            padding="SAME",
            kernel_init=HE_NORMAL,
            rngs=rngs,
        )
        self.norm = FilterResponseNorm(out_features)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.norm(self.conv(x))


class ResidualBlock(nnx.Module):
    """out = act(shortcut(x) + F(x)), F = ConvFRN 3x3 (stride), act, ConvFRN 3x3;
    the shortcut is a 1x1 ConvFRN when the block changes shape, else identity."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        stride: int,
        activation: str,
        *,
        rngs: nnx.Rngs,
    ):
        self.activation = activation
        self.conv1 = ConvFRN(in_features, out_features, 3, stride, rngs=rngs)
        self.conv2 = ConvFRN(out_features, out_features, 3, 1, rngs=rngs)
        if stride != 1 or in_features != out_features:
            self.shortcut = ConvFRN(in_features, out_features, 1, stride, rngs=rngs)
        else:
            self.shortcut = None

    def __call__(self, x: jax.Array) -> jax.Array:
        act = ACTIVATIONS[self.activation]
        y = self.conv2(act(self.conv1(x)))
        if self.shortcut is not None:
            x = self.shortcut(x)
        return act(x + y)


class ResNet20FRNModule(nnx.Module):
    """x: (batch, height, width, channels) -> logits (batch, num_outputs)."""

    def __init__(
        self,
        input_shape: tuple[int, int, int],
        num_outputs: int,
        width: int,
        activation: str,
        blocks_per_stage: int = BLOCKS_PER_STAGE,
        *,
        rngs: nnx.Rngs,
    ):
        self.input_shape = input_shape
        self.activation = activation
        self.stem = ConvFRN(input_shape[-1], width, 3, 1, rngs=rngs)
        blocks, features = [], width
        for stage in range(_STAGES):
            out_features = width * 2**stage
            for i in range(blocks_per_stage):
                stride = 2 if stage > 0 and i == 0 else 1
                blocks.append(
                    ResidualBlock(features, out_features, stride, activation, rngs=rngs)
                )
                features = out_features
        self.blocks = nnx.List(blocks)
        self.head = nnx.Linear(features, num_outputs, kernel_init=HE_NORMAL, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        if tuple(x.shape[1:]) != self.input_shape:
            raise ValueError(
                f"x must have shape (batch, *{self.input_shape}); got x.shape={x.shape}"
            )
        x = ACTIVATIONS[self.activation](self.stem(x))
        for block in self.blocks:
            x = block(x)
        # Global average pooling; for 32x32 inputs the same as the paper's 8x8 pool.
        return self.head(jnp.mean(x, axis=(1, 2)))


@dataclasses.dataclass(frozen=True)
class ResNet20FRN:
    """ResNet-20-FRN for (height, width, channels) images.

    width: filters of the first stage; the stages use width, 2*width, 4*width.
    activation: one of "relu", "tanh", "swish", "gelu"; the paper uses swish.
    blocks_per_stage: residual blocks in each stage; 3 is ResNet-20 (depth
        6 * blocks_per_stage + 2), the paper's network. Fewer give a shallower
        network of the same design (ResNet-8 with 1), which compiles faster:
        the paper presets use it under --smoke.
    """

    num_outputs: int = 10
    width: int = 16
    activation: str = "swish"
    blocks_per_stage: int = BLOCKS_PER_STAGE

    def __post_init__(self):
        object.__setattr__(
            self, "num_outputs", positive_int("num_outputs", self.num_outputs)
        )
        object.__setattr__(self, "width", positive_int("width", self.width))
        object.__setattr__(self, "blocks_per_stage",
                           positive_int("blocks_per_stage", self.blocks_per_stage))
        check_activation(self.activation)

    def build(
        self, input_shape: tuple[int, ...], *, rngs: nnx.Rngs
    ) -> ResNet20FRNModule:
        input_shape = check_input_shape(input_shape, network="ResNet20FRN", rank=3,
                                        need="an image shape (height, width, channels)")
        return ResNet20FRNModule(
            input_shape,
            self.num_outputs,
            self.width,
            self.activation,
            self.blocks_per_stage,
            rngs=rngs,
        )

    def permutation_spec(self) -> dict:
        """Channels of the residual stream of each stage (the stem or shortcut
        and every block's second conv write it, the next blocks and the head read
        it), and each block's inner channels (first conv out, second conv in).
        FRN and the activations act channel by channel."""

        def writes(prefix):  # a ConvFRN's output channels
            return [(f"{prefix}.conv.kernel", 3), (f"{prefix}.conv.bias", 0),
                    *((f"{prefix}.norm.{p}", 0) for p in ("gamma", "beta", "tau"))]

        stream = {0: writes("stem")}
        spec = {}
        for b in range(_STAGES * self.blocks_per_stage):
            stage, i = divmod(b, self.blocks_per_stage)
            reads = stage - 1 if stage > 0 and i == 0 else stage
            stream[reads].append((f"blocks.{b}.conv1.conv.kernel", 2))
            if reads != stage:  # the first block of a later stage has a 1x1 shortcut
                stream[reads].append((f"blocks.{b}.shortcut.conv.kernel", 2))
                stream[stage] = writes(f"blocks.{b}.shortcut")
            stream[stage] += writes(f"blocks.{b}.conv2")
            spec[f"blocks.{b}.inner"] = [*writes(f"blocks.{b}.conv1"),
                                         (f"blocks.{b}.conv2.conv.kernel", 2)]
        stream[_STAGES - 1].append(("head.kernel", 0))
        return {**{f"stage{s}": entries for s, entries in stream.items()}, **spec}
