"""Cost accounting: XLA FLOPs of a dense model vs hand counts; E formula."""

import jax
import pytest

from jaxkd import cost
from jaxkd.models import get_model, init_model
from jaxkd.validation import JaxkdError


def test_mlp_flops_match_hand_count():
  # MLP on 8x8x1 -> 64 inputs, hidden (256, 128), 10 classes.
  model = get_model("mlp", 10, hidden=(256, 128))
  variables = init_model(model, jax.random.key(0), (8, 8, 1))
  c = cost.model_cost(model, variables, (8, 8, 1), batch_size=4)
  dims = [(64, 256), (256, 128), (128, 10)]
  forward = sum(2 * i * o for i, o in dims)
  # backward w.r.t. params: weight gradient of every layer (2 i o) plus the
  # input gradient of every layer but the first (2 i o).
  backward = sum(2 * i * o for i, o in dims) + sum(2 * i * o for i, o in dims[1:])
  assert c.forward == pytest.approx(forward, rel=0.05)
  assert c.backward == pytest.approx(backward, rel=0.05)


@pytest.mark.parametrize("impl", ["auto", "toeplitz", "xla"])
def test_lenet_flops_count_the_convolution_not_its_implementation(impl):
  """lenet5_half's forward FLOPs are the hand count of its layers (SAME
  5x5 convs 1->3 at 8x8 and 3->8 at 4x4, fc 32-60-42-10; ReLU, pooling
  and bias adds are the few % left), whichever convolution computes it."""
  model = get_model("lenet5_half", 10, conv_impl=impl)
  variables = init_model(model, jax.random.key(0), (8, 8, 1))
  c = cost.model_cost(model, variables, (8, 8, 1), batch_size=4)

  def taps(size):   # in-bounds taps of a SAME 5-tap window, summed over size
    return sum(min(p + 2, size - 1) - max(p - 2, 0) + 1 for p in range(size))

  convs = 2 * taps(8) ** 2 * 1 * 3 + 2 * taps(4) ** 2 * 3 * 8
  dense = 2 * (32 * 60 + 60 * 42 + 42 * 10)
  assert c.forward == pytest.approx(convs + dense, rel=0.06)


def test_computation_and_counter_hand_values():
  c = cost.KDCost(teacher_forward=10.0, student_forward=2.0,
                  student_backward=4.0)
  assert c.teacher_student_ratio == 5.0
  assert c.kd_per_example == 16.0
  assert cost.computation(3, 5, 7, c) == 3 * 10 + 5 * 2 + 7 * 4
  counter = cost.CostCounter()
  with pytest.raises(JaxkdError):
    counter.relative_to_kd(c)
  # two UNIX steps of N = 64, k = 48: N_t = 48, N_s1 = 64 + 48, N_s2 = 48.
  counter.add(64, 48, 112, 48)
  counter.add(64, 48, 112, 48)
  e = 2 * (48 * 10 + 112 * 2 + 48 * 4)
  assert counter.flops(c) == e
  assert counter.relative_to_kd(c) == pytest.approx(e / (128 * 16))
  kd = cost.CostCounter()
  kd.add(64, 64, 64, 64)
  assert kd.relative_to_kd(c) == pytest.approx(1.0)
