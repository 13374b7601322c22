"""Small students and teachers: an MLP and LeNet-5 (LeCun et al., 1998).

`lenet5_half` halves every channel and hidden width, as the student in
"Knowledge Distillation in Deep Networks under a Constrained Query Budget"
and Active Mixup (Wang et al., CVPR 2020) use.

Both convolutions use SAME padding, so the same module runs on 8x8 digits
and 28x28 MNIST (flatten size 2*2*16 and 7*7*16 respectively).

These models declare `has_linear_stem = True`: their first layer (`stem`) is
affine and comes before any nonlinearity, so
stem(lam x_i + (1 - lam) x_j) == lam stem(x_i) + (1 - lam) stem(x_j).
Active Mixup uses this to compute the stem once per real image.
"""

from __future__ import annotations

from typing import ClassVar, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp


def _outputs(logits, embedding, maps, return_features):
  if return_features:
    return logits, {"embedding": embedding, "maps": tuple(maps)}
  return logits


class MLP(nn.Module):
  """Multilayer perceptron on flattened images. Input [B, H, W, C]."""
  num_classes: int = 10
  hidden: Sequence[int] = (256, 128)
  has_linear_stem: ClassVar[bool] = True

  def setup(self):
    self.layers = [nn.Dense(h) for h in self.hidden]
    self.head = nn.Dense(self.num_classes)

  def stem(self, x: jax.Array) -> jax.Array:
    """First affine layer, before its ReLU: [B, H, W, C] -> [B, hidden[0]]."""
    return self.layers[0](x.reshape((x.shape[0], -1)))

  def head_from_stem(self, h, train: bool = False, return_features=False):
    del train
    maps = []
    h = nn.relu(h)
    for layer in self.layers[1:]:
      h = nn.relu(layer(h))
    return _outputs(self.head(h), h, maps, return_features)

  def __call__(self, x, train: bool = False, return_features: bool = False):
    return self.head_from_stem(self.stem(x), train, return_features)


class LeNet5(nn.Module):
  """LeNet-5: conv(5x5)-pool-conv(5x5)-pool-fc-fc-fc. Input [B, H, W, C].

  Feature maps returned for attention transfer: the two post-ReLU conv maps.
  """
  num_classes: int = 10
  channels: Sequence[int] = (6, 16)
  hidden: Sequence[int] = (120, 84)
  has_linear_stem: ClassVar[bool] = True

  def setup(self):
    self.conv1 = nn.Conv(self.channels[0], (5, 5), padding="SAME")
    self.conv2 = nn.Conv(self.channels[1], (5, 5), padding="SAME")
    self.fc1 = nn.Dense(self.hidden[0])
    self.fc2 = nn.Dense(self.hidden[1])
    self.head = nn.Dense(self.num_classes)

  def stem(self, x: jax.Array) -> jax.Array:
    """conv1 before its ReLU: [B, H, W, C] -> [B, H, W, channels[0]]."""
    return self.conv1(x)

  def head_from_stem(self, h, train: bool = False, return_features=False):
    del train
    m1 = nn.relu(h)
    h = nn.max_pool(m1, (2, 2), strides=(2, 2))
    m2 = nn.relu(self.conv2(h))
    h = nn.max_pool(m2, (2, 2), strides=(2, 2))
    h = h.reshape((h.shape[0], -1))
    h = nn.relu(self.fc1(h))
    emb = nn.relu(self.fc2(h))
    return _outputs(self.head(emb), emb, (m1, m2), return_features)

  def __call__(self, x, train: bool = False, return_features: bool = False):
    return self.head_from_stem(self.stem(x), train, return_features)
