"""CIFAR-style students and teachers: AlexNet, ResNets, VGG-8, WRN, MobileNetV2,
ShuffleNetV1.

* `alexnet_cifar` / `alexnet_cifar_half`: the CIFAR-10 AlexNet and its
  half-width student from "Zero-Shot Knowledge Distillation in Deep Networks"
  (Nayak et al., ICML 2019), which "Knowledge Distillation in Deep Networks
  under a Constrained Query Budget" and Active Mixup (Wang et al., CVPR 2020)
  reuse: five convolutions (5x5-48, 5x5-128, 3x3-192, 3x3-192, 3x3-128) with
  ReLU, LRN after conv1/conv2, 3x3/2 max-pools after conv1, conv2 and conv5,
  BatchNorm after every block, then FC 512 -> FC 256 -> classes. The half model
  halves every channel and unit count.
* `resnet20`, `resnet8x4`, `resnet32x4`, `vgg8`, `wrn_16_2`, `mobilenetv2`,
  `shufflenet_v1`: the CIFAR networks of "Contrastive Representation
  Distillation" (Tian et al., ICLR 2020, RepDistiller code), with the same
  layer widths, so parameter counts match the published ones (for 100 classes:
  resnet20 0.28M, resnet8x4 1.23M, resnet32x4 7.43M, vgg8 3.96M,
  wrn_16_2 0.70M, mobilenetv2 (RepDistiller's `mobile_half`) 0.81M,
  shufflenet_v1 0.95M).
* `resnet56`, `vgg13`, `vgg16`, `wrn_40_1`, `wrn_40_2`: the teachers (and
  wrn_40_1 student) of the same zoo, which UNIX's official CIFAR-100 pairs
  use (xuguodong03/UNIXKD `models/__init__.py`).
* `vgg16_am`: VGG-16 as Active Mixup's code builds it (dwang181/active-mixup
  `models/vgg.py`): the `vgg16` widths with a 2x2 max-pool after every block.

All models take NHWC input of any spatial size >= 8 (so 8x8x1 digits as well as
32x32x3 CIFAR): global average pooling replaces the fixed-size pools, and
AlexNet's flatten adapts to whatever its last pool leaves (3x3 on 32x32, 1x1 on
8x8; a pool whose window exceeds its input is padded with -inf, so it acts as a
global max).

Calling convention (see `jaxkd.models`):

  logits = model.apply(variables, x, train=False)
  logits, feats = model.apply(variables, x, return_features=True)
  # feats["embedding"]: [B, D] penultimate features (after global pooling, or
  #   the last hidden layer for AlexNet).
  # feats["maps"]: per-stage [B, H, W, C] maps for attention transfer (the
  #   post-ReLU output of each stage; see each class for the exact points).

BatchNorm uses `momentum=0.9` (PyTorch's 0.1) and epsilon 1e-5; its statistics
live in the "batch_stats" collection, updated only when `train=True` and
`mutable=["batch_stats"]` (use `jaxkd.models.apply_model`).

Every model declares `has_linear_stem = True`: `stem` is the first convolution
alone (before its BatchNorm / ReLU), an affine map, so
stem(lam x_i + (1 - lam) x_j) == lam stem(x_i) + (1 - lam) stem(x_j), and
`head_from_stem(stem(x)) == __call__(x)` in train and eval mode alike.

Deviations from the originals: no dropout (AlexNet's FC dropout is left out,
since the calling convention passes no dropout RNG); AlexNet uses Flax's
default initialisers (the TF original draws N(0, 0.01) weights); the other
models use He-normal (fan-out) convolutions as RepDistiller does.
"""

from __future__ import annotations

import functools
from typing import Callable, ClassVar, Dict, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxkd import models as _models
from jaxkd.models.lenet import model_outputs
from jaxkd.validation import JaxkdError, check_rank

_conv_init = nn.initializers.variance_scaling(2.0, "fan_out", "normal")


def _batch_norm() -> nn.BatchNorm:
  """BatchNorm matching PyTorch defaults (momentum 0.1 there, 0.9 here)."""
  return nn.BatchNorm(momentum=0.9, epsilon=1e-5)


def _conv(features: int, kernel: int, stride: int = 1, *, padding: int | None
          = None, groups: int = 1, bias: bool = False) -> nn.Conv:
  """Conv with PyTorch-style symmetric padding (default `kernel // 2`)."""
  p = kernel // 2 if padding is None else padding
  return nn.Conv(features, (kernel, kernel), strides=(stride, stride),
                 padding=((p, p), (p, p)), feature_group_count=groups,
                 use_bias=bias, kernel_init=_conv_init)


def _run_stages(stages, h: jax.Array, train: bool):
  """Runs each stage's blocks in order; returns (h, [output of each stage])
  (the maps attention transfer matches)."""
  maps = []
  for blocks in stages:
    for block in blocks:
      h = block(h, train)
    maps.append(h)
  return h, maps


def _check_images(x: jax.Array) -> None:
  check_rank("x", x, 4)
  if min(x.shape[1:3]) < 8:
    raise JaxkdError(
        f"x must be [B, H, W, C] with H, W >= 8, got shape {tuple(x.shape)}.")


def _global_avg_pool(x: jax.Array) -> jax.Array:
  return jnp.mean(x, axis=(1, 2))


def _max_pool_at_least(x: jax.Array, window: int, stride: int) -> jax.Array:
  """VALID max-pool; an input smaller than the window is padded with -inf."""
  pads = [(0, max(0, window - s)) for s in x.shape[1:3]]
  return nn.max_pool(x, (window, window), strides=(stride, stride),
                     padding=pads)


def local_response_norm(x: jax.Array, depth_radius: int = 2,
                        bias: float = 1.0, alpha: float = 1e-4,
                        beta: float = 0.75) -> jax.Array:
  """TensorFlow's `tf.nn.local_response_normalization` over channels.

  out[..., c] = x[..., c] / (bias + alpha * sum_{|d-c|<=r} x[..., d]^2)^beta.

  Args:
    x: [B, H, W, C] activations.
    depth_radius: half-width r of the channel window.
    bias, alpha, beta: the normalisation constants.

  Returns:
    [B, H, W, C] normalised activations.
  """
  r = depth_radius
  sq_sum = jax.lax.reduce_window(
      jnp.square(x), 0.0, jax.lax.add, (1, 1, 1, 2 * r + 1), (1, 1, 1, 1),
      ((0, 0), (0, 0), (0, 0), (r, r)))
  return x / (bias + alpha * sq_sum) ** beta


# ----------------------------------------------------------------------------
# AlexNet (ZSKD / constrained query budget / Active Mixup CIFAR-10 AlexNet)
# ----------------------------------------------------------------------------


class AlexNetCifar(nn.Module):
  """CIFAR-10 AlexNet with BatchNorm (Nayak et al., 2019). Input [B, H, W, C].

  conv1 5x5 -> ReLU -> LRN -> maxpool 3/2 -> BN;  conv2 5x5 -> ReLU -> LRN ->
  maxpool 3/2 -> BN;  conv3, conv4 3x3 -> ReLU -> BN;  conv5 3x3 -> ReLU ->
  maxpool 3/2 -> BN;  flatten -> FC -> ReLU -> BN -> FC -> ReLU -> BN -> head.

  Maps for attention transfer: the five post-ReLU conv outputs (32, 15, 7, 7,
  7 pixels wide on 32x32 input). Embedding: the last hidden layer (after BN).
  """
  num_classes: int = 10
  channels: Sequence[int] = (48, 128, 192, 192, 128)
  hidden: Sequence[int] = (512, 256)
  has_linear_stem: ClassVar[bool] = True

  def setup(self):
    kernels = (5, 5, 3, 3, 3)
    self.convs = tuple(nn.Conv(c, (k, k), padding="SAME")
                       for c, k in zip(self.channels, kernels))
    self.conv_bns = tuple(_batch_norm() for _ in kernels)
    self.fcs = tuple(nn.Dense(h) for h in self.hidden)
    self.fc_bns = tuple(_batch_norm() for _ in self.hidden)
    self.head = nn.Dense(self.num_classes)

  def stem(self, x: jax.Array) -> jax.Array:
    """conv1 before its ReLU: [B, H, W, C] -> [B, H, W, channels[0]]."""
    _check_images(x)
    return self.convs[0](x)

  def head_from_stem(self, h, train: bool = False, return_features=False):
    ura = not train
    maps = []
    for i in range(5):
      if i > 0:
        h = self.convs[i](h)
      h = nn.relu(h)
      maps.append(h)
      if i < 2:
        h = local_response_norm(h)
      if i in (0, 1, 4):
        h = _max_pool_at_least(h, 3, 2)
      h = self.conv_bns[i](h, use_running_average=ura)
    h = h.reshape((h.shape[0], -1))
    for fc, bn in zip(self.fcs, self.fc_bns):
      h = bn(nn.relu(fc(h)), use_running_average=ura)
    return model_outputs(self.head(h), h, maps, return_features)

  def __call__(self, x, train: bool = False, return_features: bool = False):
    return self.head_from_stem(self.stem(x), train, return_features)


# ----------------------------------------------------------------------------
# CIFAR ResNets (He et al., 2016; RepDistiller resnet.py)
# ----------------------------------------------------------------------------


class BasicBlock(nn.Module):
  """3x3-3x3 residual block (post-activation), 1x1 conv+BN projection."""
  planes: int
  stride: int = 1
  project: bool = False

  @nn.compact
  def __call__(self, x, train: bool = False):
    norm = functools.partial(nn.BatchNorm, use_running_average=not train,
                             momentum=0.9, epsilon=1e-5)
    out = nn.relu(norm()(_conv(self.planes, 3, self.stride)(x)))
    out = norm()(_conv(self.planes, 3)(out))
    if self.project:
      x = norm()(_conv(self.planes, 1, self.stride)(x))
    return nn.relu(out + x)


class CifarResNet(nn.Module):
  """CIFAR ResNet-(6n+2) with basic blocks (He et al., 2016). Input NHWC.

  `num_filters = (stem, stage1, stage2, stage3)`; stages 2 and 3 stride 2.
  resnet20 = (20, [16, 16, 32, 64]); resnetNx4 = (N, [32, 64, 128, 256]).

  Maps: the three stage outputs (post-ReLU), as RepDistiller's AT uses them.
  Embedding: the globally average-pooled last stage [B, num_filters[3]].
  """
  num_classes: int = 10
  depth: int = 20
  num_filters: Sequence[int] = (16, 16, 32, 64)
  has_linear_stem: ClassVar[bool] = True

  def setup(self):
    if self.depth < 8 or (self.depth - 2) % 6:
      raise JaxkdError(
          f"CifarResNet depth must be 6n+2 >= 8, got {self.depth}.")
    n = (self.depth - 2) // 6
    self.conv1 = _conv(self.num_filters[0], 3)
    self.bn1 = _batch_norm()
    inplanes = self.num_filters[0]
    stages = []
    for s, planes in enumerate(self.num_filters[1:]):
      blocks = []
      for b in range(n):
        stride = 2 if (s > 0 and b == 0) else 1
        blocks.append(BasicBlock(
            planes, stride, project=(stride != 1 or inplanes != planes)))
        inplanes = planes
      stages.append(tuple(blocks))
    self.stages = tuple(stages)
    self.fc = nn.Dense(self.num_classes)

  def stem(self, x: jax.Array) -> jax.Array:
    """conv1 (no bias) before its BatchNorm: [B, H, W, C] -> [B, H, W, F0]."""
    _check_images(x)
    return self.conv1(x)

  def head_from_stem(self, h, train: bool = False, return_features=False):
    h = nn.relu(self.bn1(h, use_running_average=not train))
    h, maps = _run_stages(self.stages, h, train)
    emb = _global_avg_pool(h)
    return model_outputs(self.fc(emb), emb, maps, return_features)

  def __call__(self, x, train: bool = False, return_features: bool = False):
    return self.head_from_stem(self.stem(x), train, return_features)


# ----------------------------------------------------------------------------
# VGG-8 with BatchNorm (RepDistiller vgg.py, cfg "S", vgg8_bn)
# ----------------------------------------------------------------------------


class VGG(nn.Module):
  """CIFAR VGG (Simonyan & Zisserman, 2015; RepDistiller variant). NHWC.

  Five blocks of (conv3x3 + BN + ReLU) x len(cfg[i]); 2x2 max-pools after
  blocks 0-2 (and after block 3 when the input is >= 64 pixels), then global
  average pooling and one linear layer. With `pool_every_block` a 2x2
  max-pool follows every block (the kuangliu-style VGG that Active Mixup's
  code uses: on 32x32 input blocks 3 and 4 run at 4x4 and 2x2, then 1x1).

  Maps: the five post-ReLU block outputs. Embedding: the pooled [B, 512].
  """
  num_classes: int = 10
  cfg: Sequence[Sequence[int]] = ((64,), (128,), (256,), (512,), (512,))
  pool_every_block: bool = False
  has_linear_stem: ClassVar[bool] = True

  def setup(self):
    self.convs = tuple(tuple(_conv(c, 3, bias=True) for c in block)
                       for block in self.cfg)
    self.bns = tuple(tuple(_batch_norm() for _ in block) for block in self.cfg)
    self.classifier = nn.Dense(
        self.num_classes, kernel_init=nn.initializers.normal(0.01))

  def stem(self, x: jax.Array) -> jax.Array:
    """First conv (with bias) before its BatchNorm."""
    _check_images(x)
    return self.convs[0][0](x)

  def head_from_stem(self, h, train: bool = False, return_features=False):
    big_input = h.shape[1] >= 64
    maps = []
    for i, (convs, bns) in enumerate(zip(self.convs, self.bns)):
      if i > 0 and (i <= 3 or big_input or self.pool_every_block):
        h = _max_pool_at_least(h, 2, 2)
      for j, (conv, bn) in enumerate(zip(convs, bns)):
        if i or j:
          h = conv(h)
        h = nn.relu(bn(h, use_running_average=not train))
      maps.append(h)
    if self.pool_every_block:
      h = _max_pool_at_least(h, 2, 2)
    emb = _global_avg_pool(h)
    return model_outputs(self.classifier(emb), emb, maps, return_features)

  def __call__(self, x, train: bool = False, return_features: bool = False):
    return self.head_from_stem(self.stem(x), train, return_features)


# ----------------------------------------------------------------------------
# Wide ResNet (Zagoruyko & Komodakis, 2016; RepDistiller wrn.py)
# ----------------------------------------------------------------------------


class WideBlock(nn.Module):
  """Pre-activation wide basic block; 1x1 conv shortcut when widths differ."""
  out_planes: int
  stride: int = 1

  @nn.compact
  def __call__(self, x, train: bool = False):
    norm = functools.partial(nn.BatchNorm, use_running_average=not train,
                             momentum=0.9, epsilon=1e-5)
    equal = x.shape[-1] == self.out_planes
    o = nn.relu(norm()(x))
    if not equal:
      x = o
    out = nn.relu(norm()(_conv(self.out_planes, 3, self.stride)(o)))
    out = _conv(self.out_planes, 3)(out)
    shortcut = x if equal else _conv(self.out_planes, 1, self.stride)(x)
    return shortcut + out


class WideResNet(nn.Module):
  """WRN-depth-k for CIFAR. Input NHWC.

  Maps: the three block-group outputs (pre-activation residual streams, as in
  RepDistiller and the original AT code). Embedding: relu(bn(.)) then global
  average pooling, [B, 64 k].
  """
  num_classes: int = 10
  depth: int = 16
  widen_factor: int = 2
  has_linear_stem: ClassVar[bool] = True

  def setup(self):
    if self.depth < 10 or (self.depth - 4) % 6:
      raise JaxkdError(
          f"WideResNet depth must be 6n+4 >= 10, got {self.depth}.")
    n = (self.depth - 4) // 6
    k = self.widen_factor
    self.conv1 = _conv(16, 3)
    self.groups = tuple(
        tuple(WideBlock(width, stride if b == 0 else 1) for b in range(n))
        for width, stride in ((16 * k, 1), (32 * k, 2), (64 * k, 2)))
    self.bn1 = _batch_norm()
    self.fc = nn.Dense(self.num_classes)

  def stem(self, x: jax.Array) -> jax.Array:
    """conv1 (no bias): [B, H, W, C] -> [B, H, W, 16]."""
    _check_images(x)
    return self.conv1(x)

  def head_from_stem(self, h, train: bool = False, return_features=False):
    h, maps = _run_stages(self.groups, h, train)
    h = nn.relu(self.bn1(h, use_running_average=not train))
    emb = _global_avg_pool(h)
    return model_outputs(self.fc(emb), emb, maps, return_features)

  def __call__(self, x, train: bool = False, return_features: bool = False):
    return self.head_from_stem(self.stem(x), train, return_features)


# ----------------------------------------------------------------------------
# MobileNetV2 (Sandler et al., 2018; RepDistiller mobilenetv2.py, mobile_half)
# ----------------------------------------------------------------------------


class InvertedResidual(nn.Module):
  """1x1 expand -> 3x3 depthwise -> 1x1 linear projection (+ identity)."""
  out_planes: int
  stride: int
  expand_ratio: int

  @nn.compact
  def __call__(self, x, train: bool = False):
    norm = functools.partial(nn.BatchNorm, use_running_average=not train,
                             momentum=0.9, epsilon=1e-5)
    hidden = x.shape[-1] * self.expand_ratio
    h = nn.relu(norm()(_conv(hidden, 1)(x)))
    h = nn.relu(norm()(_conv(hidden, 3, self.stride, groups=hidden)(h)))
    h = norm()(_conv(self.out_planes, 1)(h))
    if self.stride == 1 and x.shape[-1] == self.out_planes:
      h = x + h
    return h


class MobileNetV2(nn.Module):
  """CIFAR MobileNetV2 with expansion T and width multiplier. Input NHWC.

  `mobilenetv2` is RepDistiller's `mobile_half` (T=6, width 0.5).
  Maps: outputs of block groups 1, 2, 4 and 6 (linear bottlenecks; RepDistiller
  f1..f4). Embedding: the pooled 1280-wide last 1x1 conv.
  """
  num_classes: int = 10
  expansion: int = 6
  width_mult: float = 0.5
  has_linear_stem: ClassVar[bool] = True

  def setup(self):
    t = self.expansion
    setting = ((1, 16, 1, 1), (t, 24, 2, 1), (t, 32, 3, 2), (t, 64, 4, 2),
               (t, 96, 3, 1), (t, 160, 3, 2), (t, 320, 1, 1))
    self.conv1 = _conv(int(32 * self.width_mult), 3, 2)
    self.bn1 = _batch_norm()
    self.blocks = tuple(
        tuple(InvertedResidual(int(c * self.width_mult), s if i == 0 else 1, e)
              for i in range(n))
        for e, c, n, s in setting)
    last = int(1280 * self.width_mult) if self.width_mult > 1.0 else 1280
    self.conv2 = _conv(last, 1)
    self.bn2 = _batch_norm()
    self.classifier = nn.Dense(
        self.num_classes, kernel_init=nn.initializers.normal(0.01))

  def stem(self, x: jax.Array) -> jax.Array:
    """conv1 (3x3 stride 2, no bias) before its BatchNorm."""
    _check_images(x)
    return self.conv1(x)

  def head_from_stem(self, h, train: bool = False, return_features=False):
    ura = not train
    h = nn.relu(self.bn1(h, use_running_average=ura))
    maps = []
    for g, blocks in enumerate(self.blocks):
      for block in blocks:
        h = block(h, train)
      if g in (1, 2, 4, 6):
        maps.append(h)
    h = nn.relu(self.bn2(self.conv2(h), use_running_average=ura))
    emb = _global_avg_pool(h)
    return model_outputs(self.classifier(emb), emb, maps, return_features)

  def __call__(self, x, train: bool = False, return_features: bool = False):
    return self.head_from_stem(self.stem(x), train, return_features)


# ----------------------------------------------------------------------------
# ShuffleNetV1 (Zhang et al., 2018; RepDistiller ShuffleNetv1.py)
# ----------------------------------------------------------------------------


def channel_shuffle(x: jax.Array, groups: int) -> jax.Array:
  """[B, H, W, C] with channels (g, C/g) reordered to (C/g, g)."""
  b, h, w, c = x.shape
  x = x.reshape((b, h, w, groups, c // groups))
  return jnp.swapaxes(x, -1, -2).reshape((b, h, w, c))


class ShuffleBottleneck(nn.Module):
  """Grouped 1x1 -> shuffle -> depthwise 3x3 -> grouped 1x1; stride 2 blocks
  concatenate a 3x3/2 average-pooled shortcut, stride 1 blocks add it."""
  out_planes: int
  stride: int
  groups: int

  @nn.compact
  def __call__(self, x, train: bool = False):
    norm = functools.partial(nn.BatchNorm, use_running_average=not train,
                             momentum=0.9, epsilon=1e-5)
    mid = self.out_planes // 4
    g = 1 if x.shape[-1] == 24 else self.groups
    out = nn.relu(norm()(_conv(mid, 1, groups=g)(x)))
    out = channel_shuffle(out, g)
    out = nn.relu(norm()(_conv(mid, 3, self.stride, groups=mid)(out)))
    out = norm()(_conv(self.out_planes, 1, groups=self.groups)(out))
    if self.stride == 2:
      res = nn.avg_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)),
                        count_include_pad=True)
      return nn.relu(jnp.concatenate([out, res], axis=-1))
    return nn.relu(out + x)


class ShuffleNetV1(nn.Module):
  """CIFAR ShuffleNetV1 (groups 3, widths 240/480/960). Input NHWC.

  Maps: the three stage outputs (post-ReLU). Embedding: pooled [B, 960].
  """
  num_classes: int = 10
  out_planes: Sequence[int] = (240, 480, 960)
  num_blocks: Sequence[int] = (4, 8, 4)
  groups: int = 3
  has_linear_stem: ClassVar[bool] = True

  def setup(self):
    self.conv1 = _conv(24, 1)
    self.bn1 = _batch_norm()
    in_planes = 24
    stages = []
    for planes, n in zip(self.out_planes, self.num_blocks):
      stages.append(tuple(
          ShuffleBottleneck(planes - (in_planes if i == 0 else 0),
                            2 if i == 0 else 1, self.groups)
          for i in range(n)))
      in_planes = planes
    self.stages = tuple(stages)
    self.linear = nn.Dense(self.num_classes)

  def stem(self, x: jax.Array) -> jax.Array:
    """conv1 (1x1, no bias) before its BatchNorm."""
    _check_images(x)
    return self.conv1(x)

  def head_from_stem(self, h, train: bool = False, return_features=False):
    h = nn.relu(self.bn1(h, use_running_average=not train))
    h, maps = _run_stages(self.stages, h, train)
    emb = _global_avg_pool(h)
    return model_outputs(self.linear(emb), emb, maps, return_features)

  def __call__(self, x, train: bool = False, return_features: bool = False):
    return self.head_from_stem(self.stem(x), train, return_features)


# ----------------------------------------------------------------------------
# Registry entries (`jaxkd.models.MODELS` imports this module on its first
# lookup; a name a user registered before that keeps the user's entry)
# ----------------------------------------------------------------------------

# RepDistiller's vgg13_bn / vgg16_bn block widths (cfg "A" / "D").
_VGG13 = ((64, 64), (128, 128), (256, 256), (512, 512), (512, 512))
_VGG16 = ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512),
          (512, 512, 512))

MODELS: Dict[str, Callable[..., nn.Module]] = {
    "alexnet_cifar": AlexNetCifar,
    "alexnet_cifar_half": functools.partial(
        AlexNetCifar, channels=(24, 64, 96, 96, 64), hidden=(256, 128)),
    "resnet20": functools.partial(CifarResNet, depth=20,
                                  num_filters=(16, 16, 32, 64)),
    "resnet8x4": functools.partial(CifarResNet, depth=8,
                                   num_filters=(32, 64, 128, 256)),
    "resnet32x4": functools.partial(CifarResNet, depth=32,
                                    num_filters=(32, 64, 128, 256)),
    "resnet56": functools.partial(CifarResNet, depth=56,
                                  num_filters=(16, 16, 32, 64)),
    "vgg8": VGG,
    "vgg13": functools.partial(VGG, cfg=_VGG13),
    "vgg16": functools.partial(VGG, cfg=_VGG16),
    "vgg16_am": functools.partial(VGG, cfg=_VGG16, pool_every_block=True),
    "wrn_16_2": functools.partial(WideResNet, depth=16, widen_factor=2),
    "wrn_40_1": functools.partial(WideResNet, depth=40, widen_factor=1),
    "wrn_40_2": functools.partial(WideResNet, depth=40, widen_factor=2),
    "mobilenetv2": functools.partial(MobileNetV2, expansion=6, width_mult=0.5),
    "shufflenet_v1": ShuffleNetV1,
}



def _register() -> None:
  for name, factory in MODELS.items():
    if name not in _models.MODELS:
      _models.register_model(name, factory)


_register()
